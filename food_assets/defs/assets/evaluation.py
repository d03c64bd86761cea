"""`evaluation_<name>` for every model and its accuracy check (`leaderboard.py` ranks them).

Evaluation runs on the test split, with temperature scaling fitted on val. The fitted
temperature goes into the evaluation's own folder (`calibration.json`, `layout.calibration_file`);
nothing is written into the model's bundle. Consumers that need calibrated probabilities read it
from there: `onnx_<name>` embeds it in the export's metadata, `predict` and the demo apply it to
a bundle (`food_assets.catalog`).
"""

# No `from __future__ import annotations`: Dagster reads the real annotation objects.

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field

from food_assets import layout
from food_assets.catalog import calibration_record
from food_assets.defs.assets._common import (
    MODEL_SHARED_MODULES,
    REEVALUATION_FRESHNESS,
    Skipped,
    code_version,
    file_ref,
    md_table,
    not_evaluated,
    skipped_output,
    table_metadata,
    user_errors,
)
from food_assets.defs.assets._pictures import picture
from food_assets.defs.assets.models import TrainedModel
from food_assets.defs.placement import GPU_OP_TAGS, GPU_POOL
from food_assets.defs.resources import ArtifactStore, QualityGates
from food_assets.ml import artifacts
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.models import list_models
from food_assets.tracking import lineage as tracking_lineage
from food_assets.tracking import runs as tracking

if TYPE_CHECKING:  # imported lazily at run time: the ml layer pulls in torch and matplotlib
    from food_assets.ml.evaluation import EvaluationResult

EVALUATION_GROUP = "evaluation"
ACCURACY_CHECK = layout.ACCURACY_CHECK

#: Code version (ADR 0011): the evaluation code and what loads a bundle.
EVALUATION_CODE_VERSION = code_version(
    "evaluation", modules=["food_assets.ml.evaluation", *MODEL_SHARED_MODULES]
)


def default_accuracy_floor(source: str, model: str, num_classes: int) -> float:
    """The floor of `model` on `source` when `QualityGates.accuracy` has none: the registry
    entry's (`ModelSpec.accuracy_floors`), else chance plus a little, so a check still means
    something (an unregistered name gets that too)."""
    from food_assets.ml.errors import UnknownModelError
    from food_assets.ml.models import get_model_spec

    try:
        floors = get_model_spec(model).accuracy_floors
    except UnknownModelError:
        floors = {}
    if source in floors:
        return float(floors[source])
    return min(1.0, 1.5 / max(num_classes, 1))


class EvaluationConfig(dg.Config):
    batch_size: int = Field(default=64, ge=1)
    num_workers: int = Field(default=0, ge=0)
    n_bootstrap: int = Field(default=1000, ge=100, description="bootstrap resamples for the CIs")
    seed: int = 0
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:1")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="forward-pass precision: auto (bf16 autocast where the CPU or GPU has native "
        "bf16, else fp32) | fp32 | bf16",
    )
    tta: Literal["none", "flip", "flip_crops"] = Field(
        default="none",
        description="test-time augmentation reported beside the plain figure (logits averaged "
        "over the image and its mirror, or 5 crops and their mirrors), with its time cost",
    )


@dataclass(frozen=True)
class EvaluationReport:
    """An `evaluation_<name>` asset's value. `files["calibration"]` is the calibration.json
    that holds `temperature` for every consumer."""

    name: str
    source: str
    summary: dict[str, float]
    temperature: float
    files: dict[str, Path]
    model_metadata: dict[str, Any] = field(default_factory=dict)


def _log_to_model_run(
    model: TrainedModel, result: "EvaluationResult", splits: SplitManifest, location: str
) -> str | None:
    """Evaluation figures go into the model's own MLflow run, next to its training curves, as
    metrics of its logged model on the test dataset (`tracking_lineage`, ADR 0023). Returns
    the test dataset's digest (None when the model has no run or no logged model)."""
    run_id = model.mlflow_run_id
    if not run_id:
        return None
    import mlflow

    registered = model.metadata.get(tracking.REGISTERED_MODEL_KEY)
    version = model.metadata.get(tracking.MODEL_VERSION_KEY)
    with mlflow.start_run(run_id=run_id, nested=True):
        model_id = tracking_lineage.logged_model_id(
            run_id, (registered, version) if registered and version else None
        )
        digest = tracking_lineage.log_test_metrics(
            {k: float(v) for k, v in result.summary.items() if v == v and k.count("/") <= 1},
            model=model.name,
            model_id=model_id,
            splits=splits,
            location=location,
        )
        for path in list(result.plots.values()) + list(result.files.values()):
            mlflow.log_artifact(str(path), artifact_path="evaluation")
    return digest


def build_evaluation_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=layout.evaluation_asset(name),
        group_name=EVALUATION_GROUP,
        ins={"model": dg.AssetIn(layout.model_asset(name))},
        kinds={"pytorch", "parquet"},
        description=f"Test-split metrics, calibration and error analysis of model_{name}",
        pool=GPU_POOL,  # inference on the GPU when there is one: one GPU step at a time
        op_tags=GPU_OP_TAGS,  # a GPU node on every launch path (placement.py, ADR 0023)
        code_version=EVALUATION_CODE_VERSION,
        freshness_policy=REEVALUATION_FRESHNESS,  # the nightly re-evaluation refreshes it
        check_specs=[
            dg.AssetCheckSpec(
                ACCURACY_CHECK,
                asset=layout.evaluation_asset(name),
                blocking=True,
                description=f"test top-1 accuracy of {name} at or above the floor for its "
                "data source (QualityGates.accuracy, else the registry entry's accuracy_floors)",
            )
        ],
    )
    def _evaluation_asset(
        context: dg.AssetExecutionContext,
        config: EvaluationConfig,
        model: Any,
        food_splits: SplitManifest,
        artifact_store: ArtifactStore,
        quality: QualityGates,
        mlflow: dg.ResourceParam[Any],
    ):
        if isinstance(model, Skipped):
            reason = f"model_{name} was skipped: {model.reason}"
            yield skipped_output(context, name, reason)
            yield not_evaluated(reason, check_name=ACCURACY_CHECK)
            return
        from food_assets.ml.evaluation import evaluate_bundle

        model: TrainedModel
        out_dir = artifact_store.asset_dir(layout.evaluation_asset(name))
        with user_errors(), tracking.server_errors():
            result = evaluate_bundle(
                model.bundle_dir,
                food_splits,
                out_dir,
                batch_size=config.batch_size,
                num_workers=config.num_workers,
                device=config.device,
                seed=config.seed,
                n_bootstrap=config.n_bootstrap,
                model_classes=model.class_names,
                tta=config.tta,
                precision=config.precision,
            )
            calibration = _write_calibration(artifact_store, name, result)
            test_digest = _log_to_model_run(
                model, result, food_splits, artifact_store.location(food_splits.path)
            )
        report = _evaluation_report(name, food_splits.source, model, result, calibration)
        metadata = _evaluation_metadata(result, calibration, model, artifact_store)
        metadata["test_dataset_digest"] = test_digest or "n/a"
        yield dg.Output(report, metadata=metadata)
        yield accuracy_check_result(report, quality)

    return _evaluation_asset


def _write_calibration(store: ArtifactStore, name: str, result: "EvaluationResult") -> Path:
    """The fitted temperature, in the evaluation's own folder (never the model's: its bundle
    stays as trained)."""
    return artifacts.write_json(
        layout.calibration_file(store.root, name),
        calibration_record(
            result.temperature,
            model=name,
            fitted_on="val",
            method="temperature scaling (minimum NLL on the val logits)",
            test_ece=_finite(result.summary.get("test/ece")),
            test_ece_calibrated=_finite(result.summary.get("test/ece_calibrated")),
        ),
    )


def _evaluation_report(
    name: str, source: str, model: TrainedModel, result: "EvaluationResult", calibration: Path
) -> EvaluationReport:
    return EvaluationReport(
        name=name,
        source=source,
        summary={k: float(v) for k, v in result.summary.items()},
        temperature=float(result.temperature),
        files={**result.files, **result.plots, "calibration": calibration},
        model_metadata=dict(model.metadata),
    )


def _evaluation_metadata(
    result: "EvaluationResult", calibration: Path, model: TrainedModel, store: ArtifactStore
) -> dict[str, Any]:
    s = result.summary
    metadata: dict[str, Any] = {
        "acc_top1": dg.MetadataValue.float(float(s["test/acc_top1"])),
        "acc_top1_ci95": f"[{s['test/acc_top1_ci_low']:.3f}, {s['test/acc_top1_ci_high']:.3f}]",
        "acc_top5": dg.MetadataValue.float(float(s["test/acc_top5"])),
        "macro_f1": dg.MetadataValue.float(float(s["test/macro_f1"])),
        "ece": dg.MetadataValue.float(float(s["test/ece"])),
        "ece_calibrated": dg.MetadataValue.float(float(s["test/ece_calibrated"])),
        "temperature": dg.MetadataValue.float(float(result.temperature)),
        "num_test_images": len(result.predictions),
        # What the figures were computed with, read back from the result (not the config).
        "bootstrap_seed": int(s["bootstrap/seed"]),
        "bootstrap_resamples": int(s["bootstrap/resamples"]),
        "per_class": md_table(result.per_class, max_rows=101),
        "most_confused_pairs": md_table(result.confused_pairs, max_rows=20),
        "hardest_images": md_table(result.hardest, max_rows=24),
        **table_metadata(result.predictions),  # the prediction table's rows and columns
        "predictions": dg.MetadataValue.path(store.location(result.files["predictions"])),
        "calibration": dg.MetadataValue.path(store.location(calibration)),
        "mlflow_run_id": model.mlflow_run_id or "n/a",
    }
    if "test/acc_top1_tta" in s:  # test-time augmentation: its figure and cost beside the plain
        metadata["acc_top1_tta"] = dg.MetadataValue.float(float(s["test/acc_top1_tta"]))
        metadata["acc_top1_tta_ci95"] = (
            f"[{s['test/acc_top1_tta_ci_low']:.3f}, {s['test/acc_top1_tta_ci_high']:.3f}]"
        )
        metadata["tta_time_ratio"] = dg.MetadataValue.float(float(s["tta/time_ratio"]))
        metadata["tta_views"] = int(s["tta/views"])
    for plot_name, path in result.plots.items():
        metadata[plot_name] = file_ref(path, store)
    for plot_name in PICTURED_PLOTS:  # shown in the UI, not only named (ADR 0024)
        if plot_name in result.plots:
            metadata.update(picture(plot_name, result.plots[plot_name], store))
    return metadata


#: The evaluation plots embedded as small pictures (`_pictures.picture`); the others stay paths.
PICTURED_PLOTS = ("confusion_matrix", "reliability")


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) != float("inf") else None


def accuracy_check_result(report: EvaluationReport, quality: QualityGates) -> dg.AssetCheckResult:
    acc = report.summary["test/acc_top1"]
    n_cls = int(report.summary.get("test/num_classes", 0))
    floor = quality.accuracy_floor(
        report.source, report.name, default_accuracy_floor(report.source, report.name, n_cls)
    )
    return dg.AssetCheckResult(
        check_name=ACCURACY_CHECK,
        passed=bool(acc >= floor),
        description=f"top-1 {acc:.3f} vs floor {floor:.3f} ({report.source})",
        metadata={"acc_top1": float(acc), "floor": float(floor), "source": report.source},
    )


EVALUATION_ASSETS = [build_evaluation_asset(name) for name in list_models()]
