"""`onnx_<name>` for every model: the fp32 export and its int8 twin, ONNX Runtime parity on real
validation images, the int8 accuracy gate on the test split, and CPU latency (eager, ORT fp32,
ORT int8); `onnx_parity` enforces the parity rule, `int8_accuracy` reports the int8 gate.

`onnx_<name>` takes `evaluation_<name>` as an input: the export embeds the temperature from the
evaluation's calibration.json (the bundle itself stays uncalibrated), and a model that fails its
accuracy gate is never exported (ADR 0005). The int8 export is an output of the same asset, not
an asset of its own (ADR 0013): it is made from the fp32 file, judged against it and timed in
the same process, and a failed int8 gate is recorded in the int8 file itself, so `predict` and
the demo never serve it.
"""

# No `from __future__ import annotations`: Dagster reads the real annotation objects.

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from food_assets import layout
from food_assets.catalog import load_temperature
from food_assets.defs.assets._common import (
    MODEL_SHARED_MODULES,
    Skipped,
    code_version,
    md_table,
    not_evaluated,
    skipped_output,
    user_errors,
)
from food_assets.defs.config_classes import config_class
from food_assets.defs.placement import GPU_OP_TAGS, GPU_POOL
from food_assets.defs.resources import ArtifactStore, QualityGates
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.export.quantize import QuantizeConfig
from food_assets.ml.models import ModelSpec, get_model_spec, list_models

if TYPE_CHECKING:  # imported lazily at run time: the exporter pulls in torch and onnx
    from food_assets.ml.export.bundle_export import ExportResult
    from food_assets.ml.export.onnx_export import ParityReport

EXPORT_GROUP = "export"
PARITY_CHECK = "onnx_parity"
INT8_CHECK = "int8_accuracy"
#: The exporter, its parity and latency code and what loads a bundle (ADR 0011).
EXPORT_CODE_VERSION = code_version(
    "export", modules=["food_assets.ml.export", "food_assets.ml.inference", *MODEL_SHARED_MODULES]
)


#: The int8 settings, derived from `QuantizeConfig` (ADR 0008).
Int8Config = config_class(QuantizeConfig, name="Int8Config")


class ExportConfig(dg.Config):
    parity_images: int = Field(default=32, ge=1, description="validation images for parity")
    latency_repeats: int = Field(default=10, ge=1, description="timed calls at batch 1")
    latency_repeats_batch32: int = Field(default=2, ge=1, description="timed calls at batch 32")
    measure_latency: bool = True
    opset: int | None = Field(default=None, description="None: the exporter's default")
    int8: Int8Config = Field(  # type: ignore[valid-type]
        default_factory=Int8Config, description="the int8 export (static quantization)"
    )
    openvino: bool = Field(
        default=True,
        description="also gate and time the OpenVINO variants (fp32, bf16, int8) of the same "
        "files, so the serving rule may pick them (ADR 0021); skipped where openvino is absent",
    )


@dataclass(frozen=True)
class OnnxExport:
    name: str
    path: Path
    parity: dict[str, Any]
    latency_path: Path | None
    int8_path: Path | None = None


def _skip_reason(name: str, spec: ModelSpec, model: Any, evaluation: Any) -> str | None:
    if isinstance(model, Skipped):
        return f"model_{name} was skipped: {model.reason}"
    if isinstance(evaluation, Skipped):
        return f"evaluation_{name} was skipped: {evaluation.reason}"
    if not spec.onnx:
        return f"{name} does not support ONNX export"
    return None


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
        pool=GPU_POOL,  # PyTorch-side parity runs on the GPU when there is one
        op_tags=GPU_OP_TAGS,  # a GPU node on every launch path (placement.py, ADR 0023)
        code_version=EXPORT_CODE_VERSION,
        description=f"model_{name} as ONNX (dynamic batch, class names, preprocessing and "
        "temperature in the metadata), fp32 and int8, with parity, the int8 accuracy gate and "
        "CPU latency",
        check_specs=[
            dg.AssetCheckSpec(
                INT8_CHECK,
                asset=layout.onnx_asset(name),
                # Blocks downstream only when QualityGates.int8_gate_fails_run makes a failure
                # an ERROR; either way a failed int8 file is never served (ADR 0013).
                blocking=True,
                description="int8 export vs fp32 on the test split: top-1 agreement >= "
                "QualityGates.int8_min_agreement and accuracy drop <= int8_max_drop_points",
            )
        ],
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
        reason = _skip_reason(name, spec, model, evaluation)
        if reason:
            yield skipped_output(context, name, reason)
            yield not_evaluated(reason, check_name=INT8_CHECK)
            return
        from food_assets.ml.export.bundle_export import export_bundle

        root = artifact_store.root
        with user_errors():
            result = export_bundle(
                model.bundle_dir,
                food_splits,
                layout.onnx_dir(root, name),
                # The evaluation's calibration, not the bundle's card (which stays as trained).
                temperature=load_temperature(evaluation.files["calibration"]),
                measure_latency=config.measure_latency,
                opset=config.opset,
                n_parity=config.parity_images,
                atol=quality.onnx_atol,
                latency_repeats={1: config.latency_repeats, 32: config.latency_repeats_batch32},
                name=name,
                int8=config.int8.to_ml(),
                int8_min_agreement=quality.int8_min_agreement,
                int8_max_drop_points=quality.int8_max_drop_points,
                openvino=config.openvino,
            )
        value = OnnxExport(
            name, result.path, result.parity.to_dict(), result.latency_path, result.int8_path
        )
        yield dg.Output(value, metadata=_export_metadata(result, artifact_store))
        yield int8_check_result(result, quality)

    return [_onnx_asset, _build_parity_check(name, spec, _onnx_asset)]


def _export_metadata(result: "ExportResult", store: ArtifactStore) -> dict[str, Any]:
    parity, card, latency = result.parity, result.card, result.latency
    metadata: dict[str, Any] = {
        "onnx": dg.MetadataValue.path(store.location(result.path)),
        "size_mb": round(result.path.stat().st_size / 2**20, 2),
        "max_abs_logit_diff": float(parity.max_abs_diff),
        "top1_agreement": float(parity.top1_agreement),
        "parity_images": int(parity.n_images),
        "temperature": float(card.temperature),
        "input_size": card.preprocess.input_size,
    }
    if latency is not None:
        metadata["latency"] = md_table(latency, floatfmt=".2f")
        metadata["latency_threads"] = int(latency["threads"].iloc[0])
        b1 = latency[latency["batch"] == 1].set_index("backend")["median_ms"]
        # The key figures `food-assets run` prints for an export (ms per image, batch 1).
        for backend, key in (
            ("onnxruntime", "ort_fp32_ms_b1"),
            ("onnxruntime_int8", "ort_int8_ms_b1"),
        ):
            if backend in b1.index:
                metadata[key] = round(float(b1[backend]), 2)
        if {"eager", "onnxruntime"} <= set(b1.index):
            metadata["ort_over_eager_batch1"] = round(float(b1["onnxruntime"] / b1["eager"]), 3)
        if {"onnxruntime", "onnxruntime_int8"} <= set(b1.index):
            ratio = float(b1["onnxruntime_int8"] / b1["onnxruntime"])
            metadata["int8_over_fp32_batch1"] = round(ratio, 3)
    if result.int8_path is not None and result.int8 is not None:
        q = result.int8["quantization"]
        metadata["int8_onnx"] = dg.MetadataValue.path(store.location(result.int8_path))
        metadata["int8_size_mb"] = round(result.int8_path.stat().st_size / 2**20, 2)
        metadata["int8_calibration_images"] = int(q["calibration_images"])
        metadata["int8_method"] = (
            f"{q['format']}, {q['method']} calibration on {q['calibration_split']}, "
            f"{'per-channel' if q['per_channel'] else 'per-tensor'} int8 weights, "
            f"{q['activations']} activations"
        )
        metadata["int8_gate_passed"] = bool(result.int8_gate and result.int8_gate.passed)
    metadata.update(_serving_metadata(result.path))
    return metadata


def _serving_metadata(path: Path) -> dict[str, Any]:
    """Every serving variant's gate verdict and batch-1 latency, and what `auto` serves."""
    from food_assets.ml.inference.serving import describe_variants

    rows = describe_variants(path)
    served = next((r["variant"] for r in rows if r["auto"]), "nothing")
    cells = {
        f"variant {r['variant']}": r["verdict"]
        + (f", {r['ms_b1']:.2f} ms b1" if r["ms_b1"] is not None else "")
        for r in rows
    }
    return {"auto_serves": served, **cells}


def int8_check_result(result: "ExportResult", quality: QualityGates) -> dg.AssetCheckResult:
    """`int8_accuracy`'s result: the gate `export_bundle` ran (ERROR only when
    `QualityGates.int8_gate_fails_run`; a failed int8 file is never served either way)."""
    gate = result.int8_gate
    if gate is None:
        return not_evaluated("int8 is off in this export's config", check_name=INT8_CHECK)
    severity = (
        dg.AssetCheckSeverity.ERROR if quality.int8_gate_fails_run else (dg.AssetCheckSeverity.WARN)
    )
    return dg.AssetCheckResult(
        check_name=INT8_CHECK,
        passed=bool(gate.passed),
        severity=severity,
        description=gate.description
        + ("" if gate.passed else "; the int8 export will not be served (fp32 is)"),
        metadata=dict(gate.metadata),
    )


def _build_parity_check(
    name: str, spec: ModelSpec, onnx_asset: dg.AssetsDefinition
) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=onnx_asset,
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
        from food_assets.ml.export.bundle_export import check_bundle_parity

        try:
            # A check is a step of its own: fetch the export it reads (no-op for a local root).
            artifact_store.fetch(layout.onnx_asset(name), prefix=layout.ONNX_FILE)
            path = layout.onnx_file(artifact_store.root, name)
            report = check_bundle_parity(path, model.bundle_dir, food_splits, 32, quality.onnx_atol)
        except FoodAssetsError as exc:
            return dg.AssetCheckResult(passed=False, description=str(exc))
        return parity_check_result(report)

    return _parity_check


def parity_check_result(report: "ParityReport") -> dg.AssetCheckResult:
    """`onnx_parity`'s result from a parity report (at ERROR: a mismatch fails the run)."""
    return dg.AssetCheckResult(
        passed=bool(report.passed),
        description=f"max |diff| {report.max_abs_diff:.2e} (atol {report.atol:g}), "
        f"top-1 agreement {report.top1_agreement:.1%} on {report.n_images} images",
        metadata={k: v for k, v in report.to_dict().items() if isinstance(v, (int, float))},
    )


EXPORT_DEFS = [d for name in list_models() for d in build_export_asset(name)]
