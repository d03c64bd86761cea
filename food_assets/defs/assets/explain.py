"""`gradcam_<name>` for every model with a Grad-CAM target: galleries of confident right and
wrong predictions and per-class tiles, with a sanity measure enforced by `gradcam_sanity`."""

# No `from __future__ import annotations`: Dagster reads the real annotation objects.

from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from food_assets import layout
from food_assets.defs.assets._common import (
    MODEL_SHARED_MODULES,
    Skipped,
    check_result,
    code_version,
    file_ref,
    md_table,
    not_evaluated,
    skipped_output,
    user_errors,
)
from food_assets.defs.assets._pictures import picture
from food_assets.defs.placement import GPU_OP_TAGS, GPU_POOL
from food_assets.defs.resources import ArtifactStore
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.models import ModelSpec, get_model_spec, list_models
from food_assets.ml.quality import check_gradcam_sanity

if TYPE_CHECKING:  # imported lazily at run time: Grad-CAM pulls in torch and matplotlib
    from food_assets.ml.explain import GradcamResult

EXPLAIN_GROUP = "explain"
SANITY_CHECK = "gradcam_sanity"
#: The Grad-CAM code and what loads a bundle (ADR 0011).
EXPLAIN_CODE_VERSION = code_version(
    "explain", modules=["food_assets.ml.explain", *MODEL_SHARED_MODULES]
)


class GradcamConfig(dg.Config):
    split: str = Field(default="test", description="which split the galleries draw from")
    n_per_gallery: int = Field(default=16, ge=1)
    classes: list[str] = Field(default_factory=list, description="empty: the hardest classes")
    per_class: int = Field(default=4, ge=1)
    max_images: int = Field(default=1000, ge=1, description="images scored for the galleries")
    n_sanity: int = Field(default=64, ge=1, description="images for the sanity measures")
    seed: int = 0


def sanity_check_result(metrics: dict[str, float]) -> dg.AssetCheckResult:
    """`gradcam_sanity` from the report's figures; the decision is
    `food_assets.ml.quality.check_gradcam_sanity`. WARN: an undertrained model may not localise
    yet, which is a warning to read, not a broken run."""
    return check_result(
        check_gradcam_sanity(metrics),
        check_name=SANITY_CHECK,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=_finite_metrics(metrics),
    )


def _skip_reason(name: str, spec: ModelSpec, model: Any) -> str | None:
    if isinstance(model, Skipped):
        return f"model_{name} was skipped: {model.reason}"
    if not spec.cam_layer:
        return f"{name} has no Grad-CAM target layer in the registry"
    return None


def _finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The report's numeric figures without their `gradcam/` prefix; NaN left out."""
    return {
        k.replace("gradcam/", ""): float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and v == v
    }


def _gradcam_metadata(result: "GradcamResult", cam_layer: str, store: Any = None) -> dict[str, Any]:
    metadata: dict[str, Any] = _finite_metrics(result.metrics)
    metadata["cam_layer"] = cam_layer
    for gallery, path in result.galleries.items():
        metadata[f"gallery_{gallery}"] = file_ref(path, store)
    metadata.update(_tiles_picture(result, store))
    metadata["tiles"] = md_table(
        result.tiles[["gallery", "position", "true_class", "pred_class", "confidence"]],
        max_rows=48,
    )
    return metadata


#: The galleries whose first row of tiles is shown as a picture in the UI (ADR 0024).
PICTURED_GALLERIES = ("correct", "wrong")


def _tiles_picture(result: "GradcamResult", store: Any) -> dict[str, Any]:
    """`gradcam_tiles_preview`: the first row of tiles of the correct and the wrong galleries,
    one above the other (a gallery with no tiles, such as no wrong predictions, is left out)."""
    tiles = result.tiles
    present = set(tiles["gallery"])
    shown = [g for g in PICTURED_GALLERIES if g in result.galleries and g in present]
    rows = [int(tiles.loc[tiles["gallery"] == g, "row"].max()) + 1 for g in shown]
    return picture("gradcam_tiles", [result.galleries[g] for g in shown], store, rows=rows)


def build_explain_asset(name: str) -> dg.AssetsDefinition:
    spec = get_model_spec(name)

    @dg.asset(
        name=layout.gradcam_asset(name),
        group_name=EXPLAIN_GROUP,
        ins={"model": dg.AssetIn(layout.model_asset(name))},
        kinds={"pytorch", "png"},
        description=f"Grad-CAM galleries of model_{name} (target layer {spec.cam_layer})",
        pool=GPU_POOL,
        op_tags=GPU_OP_TAGS,  # a GPU node on every launch path (placement.py, ADR 0023)
        code_version=EXPLAIN_CODE_VERSION,
        check_specs=[
            dg.AssetCheckSpec(
                SANITY_CHECK,
                asset=layout.gradcam_asset(name),
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
        reason = _skip_reason(name, spec, model)
        if reason:
            yield skipped_output(context, name, reason)
            yield not_evaluated(reason, check_name=SANITY_CHECK)
            return
        from food_assets.ml.explain import build_gradcam_report
        from food_assets.ml.models.bundle import load_bundle

        with user_errors():
            net, card = load_bundle(model.bundle_dir)
            result = build_gradcam_report(
                net,
                card,
                spec.cam_layer,
                spec.cam_reshape,
                food_splits.frame(config.split),
                layout.gradcam_report_dir(artifact_store.root, name),
                n_per_gallery=config.n_per_gallery,
                classes=config.classes or None,
                per_class=config.per_class,
                seed=config.seed,
                max_images=config.max_images,
                n_sanity=config.n_sanity,
            )
        yield dg.Output(
            result.tiles_path, metadata=_gradcam_metadata(result, spec.cam_layer, artifact_store)
        )
        yield sanity_check_result(result.metrics)

    return _gradcam_asset


EXPLAIN_ASSETS = [build_explain_asset(name) for name in list_models()]
