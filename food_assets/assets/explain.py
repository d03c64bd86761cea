"""`gradcam_<name>` for every model with a Grad-CAM target: galleries of confident right and
wrong predictions and per-class tiles, with a sanity measure enforced by `gradcam_sanity`."""

# No `from __future__ import annotations`: Dagster reads the real annotation objects.

import math
from typing import Any

import dagster as dg
from pydantic import Field

from food_assets.assets._common import Skipped, md_image, md_table, skipped_output, user_errors
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.models import get_model_spec, list_models
from food_assets.resources import ArtifactStore

EXPLAIN_GROUP = "explain"
SANITY_CHECK = "gradcam_sanity"


class GradcamConfig(dg.Config):
    split: str = Field(default="test", description="which split the galleries draw from")
    n_per_gallery: int = Field(default=16, ge=1)
    classes: list[str] = Field(default_factory=list, description="empty: the hardest classes")
    per_class: int = Field(default=4, ge=1)
    max_images: int = Field(default=1000, ge=1, description="images scored for the galleries")
    n_sanity: int = Field(default=64, ge=1, description="images for the sanity measures")
    seed: int = 0


def sanity_verdict(metrics: dict[str, float]) -> tuple[bool, str]:
    """Pointing game against its random baseline where boxes are known (the sample source);
    otherwise the deletion test: removing the top-CAM region must hurt more than a random one."""
    point = metrics.get("gradcam/pointing_game", math.nan)
    base = metrics.get("gradcam/pointing_random_expected", math.nan)
    if point == point and base == base:
        return point > base, f"pointing game {point:.2f} vs random {base:.2f}"
    cam, rnd = metrics.get("gradcam/deletion_cam_drop"), metrics.get("gradcam/deletion_random_drop")
    if cam is None or rnd is None or cam != cam or rnd != rnd:
        return False, "no sanity figure could be computed"
    return cam > rnd, f"deletion drop {cam:.3f} (CAM region) vs {rnd:.3f} (random region)"


def build_explain_asset(name: str) -> dg.AssetsDefinition:
    spec = get_model_spec(name)

    @dg.asset(
        name=f"gradcam_{name}",
        group_name=EXPLAIN_GROUP,
        ins={"model": dg.AssetIn(f"model_{name}")},
        kinds={"pytorch", "png"},
        description=f"Grad-CAM galleries of model_{name} (target layer {spec.cam_layer})",
        check_specs=[
            dg.AssetCheckSpec(
                SANITY_CHECK,
                asset=f"gradcam_{name}",
                description="CAMs point at the object more often than chance (pointing game on "
                "the sample source), or removing the top-CAM region hurts more than a random one",
            )
        ],
    )
    def _gradcam_asset(
        context: dg.AssetExecutionContext,
        config: GradcamConfig,
        model: Any,
        food_splits: SplitManifest,
        artifact_store: ArtifactStore,
    ):
        reason = None
        if isinstance(model, Skipped):
            reason = f"model_{name} was skipped: {model.reason}"
        elif not spec.cam_layer:
            reason = f"{name} has no Grad-CAM target layer in the registry"
        if reason:
            yield skipped_output(context, name, reason)
            yield dg.AssetCheckResult(
                check_name=SANITY_CHECK,
                passed=True,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"not computed: {reason}",
            )
            return
        from food_assets.ml.explain.gradcam import build_gradcam_report
        from food_assets.ml.models.bundle import load_bundle

        with user_errors():
            net, card = load_bundle(model.bundle_dir)
            result = build_gradcam_report(
                net,
                card,
                spec.cam_layer,
                spec.cam_reshape,
                food_splits.frame(config.split),
                artifact_store.asset_dir(f"gradcam_{name}") / "report",
                n_per_gallery=config.n_per_gallery,
                classes=config.classes or None,
                per_class=config.per_class,
                seed=config.seed,
                max_images=config.max_images,
                n_sanity=config.n_sanity,
            )
        metadata: dict[str, Any] = {
            k.replace("gradcam/", ""): float(v)
            for k, v in result.metrics.items()
            if isinstance(v, (int, float)) and v == v
        }
        metadata["cam_layer"] = spec.cam_layer
        for gallery, path in result.galleries.items():
            metadata[f"gallery_{gallery}"] = md_image(path, alt=gallery)
        metadata["tiles"] = md_table(
            result.tiles[["gallery", "position", "true_class", "pred_class", "confidence"]],
            max_rows=48,
        )
        yield dg.Output(result.tiles_path, metadata=metadata)
        passed, description = sanity_verdict(result.metrics)
        yield dg.AssetCheckResult(
            check_name=SANITY_CHECK,
            passed=passed,
            # An undertrained model may not localise yet: a warning to read, not a broken run.
            severity=dg.AssetCheckSeverity.WARN,
            description=description,
            metadata={k: float(v) for k, v in metadata.items() if isinstance(v, float)},
        )

    return _gradcam_asset


EXPLAIN_ASSETS = [build_explain_asset(name) for name in list_models()]
