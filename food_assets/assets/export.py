"""`onnx_<name>` for every model: export, ONNX Runtime parity on real validation images, and
CPU latency (eager against ONNX Runtime); `onnx_parity` enforces the parity rule.

`onnx_<name>` takes `evaluation_<name>` as an input: the export embeds the temperature from the
evaluation's calibration.json (the bundle itself stays uncalibrated), and a model that fails its
accuracy gate is never exported (ADR 0005).
"""

# No `from __future__ import annotations`: Dagster reads the real annotation objects.

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from food_assets import layout
from food_assets.assets._common import (
    Skipped,
    md_table,
    not_evaluated,
    skipped_output,
    user_errors,
)
from food_assets.catalog import load_temperature
from food_assets.ml import artifacts
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.models import get_model_spec, list_models
from food_assets.resources import ArtifactStore, QualityGates

EXPORT_GROUP = "export"
PARITY_CHECK = "onnx_parity"


class ExportConfig(dg.Config):
    parity_images: int = Field(default=32, ge=1, description="validation images for parity")
    latency_repeats: int = Field(default=10, ge=1, description="timed calls at batch 1")
    latency_repeats_batch32: int = Field(default=2, ge=1, description="timed calls at batch 32")
    measure_latency: bool = True
    opset: int | None = Field(default=None, description="None: the exporter's default")


@dataclass(frozen=True)
class OnnxExport:
    name: str
    path: Path
    parity: dict[str, Any]
    latency_path: Path | None


def _parity_images(splits: SplitManifest, preprocess: Any, n: int):
    import torch

    from food_assets.ml.data.transforms import ImagePipeline

    frame = splits.frame("val")
    if frame.empty:
        frame = splits.frame("test")
    pipeline = ImagePipeline(preprocess)
    paths = frame.sort_values("path")["path"].head(n)
    return torch.stack([pipeline(p) for p in paths])


def run_parity(path: Path, bundle_dir: Path, splits: SplitManifest, n: int, atol: float):
    """Load the file as a user would (metadata and graph hash validated), then compare it with
    the PyTorch model on real validation images."""
    from food_assets.ml.export.onnx_export import check_parity, load_onnx
    from food_assets.ml.models.bundle import load_bundle

    _, meta = load_onnx(path)  # a tampered or foreign file fails here with a clear message
    model, card = load_bundle(bundle_dir)
    if list(meta.class_names) != list(card.class_names):
        from food_assets.ml.errors import CheckpointError

        raise CheckpointError(f"{path} holds other class names than the bundle {bundle_dir}")
    images = _parity_images(splits, card.preprocess, n)
    return check_parity(path, model, images, atol=atol)


def build_export_asset(name: str) -> list:
    spec = get_model_spec(name)

    @dg.asset(
        name=layout.onnx_asset(name),
        group_name=EXPORT_GROUP,
        ins={
            "model": dg.AssetIn(layout.model_asset(name)),
            "evaluation": dg.AssetIn(layout.evaluation_asset(name)),
        },
        kinds={"onnx"},
        description=f"model_{name} as ONNX (dynamic batch, class names, preprocessing and "
        "temperature in the metadata), with parity and CPU latency",
    )
    def _onnx_asset(
        context: dg.AssetExecutionContext,
        config: ExportConfig,
        model: Any,
        evaluation: Any,
        food_splits: SplitManifest,
        artifact_store: ArtifactStore,
        quality: QualityGates,
    ):
        if isinstance(model, Skipped):
            yield skipped_output(context, name, f"model_{name} was skipped: {model.reason}")
            return
        if isinstance(evaluation, Skipped):
            yield skipped_output(
                context, name, f"evaluation_{name} was skipped: {evaluation.reason}"
            )
            return
        if not spec.onnx:
            yield skipped_output(context, name, f"{name} does not support ONNX export")
            return
        from food_assets.ml.export.latency import measure_latency
        from food_assets.ml.export.onnx_export import export_onnx
        from food_assets.ml.models.bundle import load_bundle

        root = artifact_store.root
        path = layout.onnx_file(root, name)
        with user_errors():
            net, card = load_bundle(model.bundle_dir)
            # The evaluation's calibration, not the bundle's card (which stays as trained).
            card = dataclasses.replace(
                card, temperature=load_temperature(evaluation.files["calibration"])
            )
            export_onnx(net, card, path, opset=config.opset)
            parity = run_parity(
                path, model.bundle_dir, food_splits, config.parity_images, quality.onnx_atol
            )
            artifacts.write_json(layout.parity_file(root, name), parity.to_dict())
            latency_path = None
            latency = None
            if config.measure_latency:
                latency = measure_latency(
                    net,
                    path,
                    card.preprocess.input_size,
                    batch_sizes=(1, 32),
                    repeats={1: config.latency_repeats, 32: config.latency_repeats_batch32},
                    warmup={1: 2, 32: 1},
                    name=name,
                )
                latency_path = artifacts.write_json(
                    layout.latency_file(root, name), latency.to_dict(orient="records")
                )
        metadata: dict[str, Any] = {
            "onnx": dg.MetadataValue.path(artifact_store.location(path)),
            "size_mb": round(path.stat().st_size / 2**20, 2),
            "max_abs_logit_diff": float(parity.max_abs_diff),
            "top1_agreement": float(parity.top1_agreement),
            "parity_images": int(parity.n_images),
            "temperature": float(card.temperature),
            "input_size": card.preprocess.input_size,
        }
        if latency is not None:
            metadata["latency"] = md_table(latency, floatfmt=".2f")
            b1 = latency[latency["batch"] == 1].set_index("backend")["median_ms"]
            if {"eager", "onnxruntime"} <= set(b1.index):
                metadata["ort_over_eager_batch1"] = round(float(b1["onnxruntime"] / b1["eager"]), 3)
        yield dg.Output(
            OnnxExport(name=name, path=path, parity=parity.to_dict(), latency_path=latency_path),
            metadata=metadata,
        )

    @dg.asset_check(
        asset=_onnx_asset,
        name=PARITY_CHECK,
        blocking=True,
        additional_ins={
            "food_splits": dg.AssetIn("food_splits"),
            "model": dg.AssetIn(layout.model_asset(name)),
        },
        description="ONNX Runtime logits within the tolerance of PyTorch (1e-4 fp32) and the "
        "same top-1 on every validation image, reading the file as a user would",
    )
    def _parity_check(
        artifact_store: ArtifactStore, quality: QualityGates, food_splits: Any, model: Any
    ) -> dg.AssetCheckResult:
        if isinstance(model, Skipped):
            return not_evaluated(f"model_{name} was skipped: {model.reason}")
        if not spec.onnx:
            return not_evaluated(f"{name} does not support ONNX export")
        from food_assets.ml.errors import FoodAssetsError

        try:
            # A check is a step of its own: fetch the export it reads (no-op for a local root).
            artifact_store.fetch(layout.onnx_asset(name), prefix=layout.ONNX_FILE)
            path = layout.onnx_file(artifact_store.root, name)
            report = run_parity(path, model.bundle_dir, food_splits, 32, quality.onnx_atol)
        except FoodAssetsError as exc:
            return dg.AssetCheckResult(passed=False, description=str(exc))
        return dg.AssetCheckResult(
            passed=bool(report.passed),
            description=f"max |diff| {report.max_abs_diff:.2e} (atol {report.atol:g}), "
            f"top-1 agreement {report.top1_agreement:.1%} on {report.n_images} images",
            metadata={k: v for k, v in report.to_dict().items() if isinstance(v, (int, float))},
        )

    return [_onnx_asset, _parity_check]


EXPORT_DEFS = [d for name in list_models() for d in build_export_asset(name)]
