"""`model_<name>` for every registry entry: one factory, one MLflow run per materialization.

The asset knows no kind of model: its run config is derived from the entry's settings class
(`config_cls`, `food_assets/defs/config_classes.py`), and `spec.fit(...)` makes the bundle
(`ml/models/bundle.py`) that evaluation, Grad-CAM, ONNX export, `predict` and the demo read.
MLflow records are `food_assets/tracking/runs.py`'s.
"""

# No `from __future__ import annotations`: Dagster reads the real annotation objects.

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from food_assets import layout
from food_assets.defs.assets._common import (
    TRAINING_RETRY,
    file_ref,
    md_table,
    plain,
    skipped_output,
    spec_code_version,
    user_errors,
)
from food_assets.defs.config_classes import config_class
from food_assets.defs.placement import GPU_OP_TAGS, GPU_POOL
from food_assets.defs.resources import ArtifactStore, LightningCompute
from food_assets.ml import artifacts
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.models import get_model_spec, list_models
from food_assets.ml.models.bundle import FitResult
from food_assets.ml.models.registry import FitContext, FitSkipped, ModelSpec
from food_assets.ml.training.config import settings_class
from food_assets.tracking import lineage as tracking_lineage
from food_assets.tracking import runs as tracking

MODELS_GROUP = "models"
#: Cache folder (`ArtifactStore.cache_dir`) for fits that extract frozen features.
FEATURE_CACHE = "features"


@dataclass(frozen=True)
class TrainedModel:
    """A `model_<name>` asset's value: where its bundle is and how it was made."""

    name: str
    family: str
    bundle_dir: Path
    class_names: tuple[str, ...]
    source: str
    mlflow_run_id: str | None
    metadata: dict[str, Any]


#: The MLflow links (`tracking.ModelRun.links`) shown as clickable URLs.
URL_KEYS = ("mlflow_run", "mlflow_model_version")


def model_config_class(spec: ModelSpec) -> type:
    """The run config of `model_<spec.name>`: the spec's settings class with its defaults."""
    title = "".join(part.title() for part in spec.name.split("_"))
    return config_class(
        settings_class(spec),
        name=f"Model{title}Config",
        defaults=spec.config_defaults,
        doc=f"Run config of model_{spec.name} (fields, defaults and descriptions from "
        f"{settings_class(spec).__name__}).",
    )


def fit_metadata(result: FitResult, spec: ModelSpec, store: Any = None) -> dict[str, Any]:
    """Dagster metadata of a fit: the card's facts, scalar figures, tables, plots (as references
    to the PNGs under the artifact root, `store.location`)."""
    meta: dict[str, Any] = {
        "family": spec.family,
        "num_classes": len(result.card.class_names),
        "input_size": result.card.preprocess.input_size,
        "mode": result.card.mode,
        "weights_source": result.card.weights_source,
        "bundle": dg.MetadataValue.path(str(result.bundle_dir)),
    }
    for k, v in result.metadata.items():
        if isinstance(v, (int, float, str, Path)) or v is None:
            meta[k] = plain(v)
        elif isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            # Tables such as CLIP's per-template accuracies or the k-shot curve.
            meta[k] = md_table(pd.DataFrame(v), max_rows=50)
    if not result.history.empty:
        meta["history"] = md_table(result.history, max_rows=100)
    for name, path in result.plots.items():
        meta[name] = file_ref(path, store)
    return meta


def trained_model(spec: ModelSpec, result: FitResult, source: str, run_id: str) -> TrainedModel:
    scalars = {k: v for k, v in result.metadata.items() if isinstance(v, (int, float, str))}
    return TrainedModel(
        name=spec.name,
        family=spec.family,
        bundle_dir=result.bundle_dir,
        class_names=tuple(result.card.class_names),
        source=source,
        mlflow_run_id=run_id,
        metadata=scalars,
    )


def build_model_asset(spec: ModelSpec | str) -> dg.AssetsDefinition:
    """The `model_<name>` asset for one registry entry (a spec or its name)."""
    spec = get_model_spec(spec) if isinstance(spec, str) else spec
    config_cls, asset = model_config_class(spec), layout.model_asset(spec.name)

    @dg.asset(
        name=asset,
        group_name=MODELS_GROUP,
        description=spec.description or f"{spec.name} ({spec.family})",
        kinds=set(spec.kinds),
        pool=GPU_POOL,
        op_tags=GPU_OP_TAGS,  # a GPU node on every launch path (placement.py, ADR 0023)
        tags={"food_assets/family": spec.family},
        # The entry, its hooks and their source: a changed model shows as stale (ADR 0011).
        code_version=spec_code_version(spec),
        retry_policy=TRAINING_RETRY,  # resumes from last.ckpt; user mistakes are not retried
    )
    def _model_asset(
        context: dg.AssetExecutionContext,
        config: config_cls,  # type: ignore[valid-type]
        food_splits: SplitManifest,
        artifact_store: ArtifactStore,
        compute: LightningCompute,
        mlflow: dg.ResourceParam[Any],
    ):
        out_dir, t0 = artifact_store.asset_dir(asset), time.perf_counter()
        tags = {"dagster_run_id": context.run.run_id, "asset": asset, "model": spec.name,
                "source": food_splits.source}  # fmt: skip
        try:
            # A tracking server that goes away: one line, no retry, checkpoints kept (#29).
            with (
                user_errors(),
                tracking.server_errors(),
                tracking.model_run(mlflow, asset, tags) as run,
            ):
                from food_assets.ml.training.progress import EpochProgress

                # One "epoch 2/4: val top-1 ..." log line per epoch: `food-assets run` shows it.
                progress = EpochProgress(context.log.info, getattr(config, "epochs", None))
                # The train and val manifests as the run's datasets (ADR 0023).
                digests = tracking_lineage.log_training_datasets(
                    food_splits, artifact_store.location(food_splits.path)
                )
                fit_context = FitContext(
                    compute=compute.compute_config(),
                    loggers=[*run.loggers(), progress],
                    feature_cache_dir=artifact_store.cache_dir(FEATURE_CACHE),
                    log=context.log.warning,
                )
                from food_assets.ml.training.fit import fit_model  # Lightning: at run time

                result = fit_model(spec, food_splits, config.to_ml(), out_dir, fit_context)
                params = {"model": spec.name, "family": spec.family, "source": food_splits.source,
                          **config.model_dump(), **compute.model_dump(),
                          "weights_source": result.card.weights_source}  # fmt: skip
                artifacts.write_json(out_dir / "resolved_config.json", params)
                run.log_fit(result, params)
        except FitSkipped as skip:
            yield skipped_output(context, spec.name, skip.reason)
            return
        links = {k: dg.MetadataValue.url(v) if k in URL_KEYS else v for k, v in run.links().items()}
        metadata = {**fit_metadata(result, spec, artifact_store), **links}
        metadata["asset_seconds"] = round(time.perf_counter() - t0, 1)
        metadata.update({f"{split}_dataset_digest": d for split, d in digests.items()})
        value = trained_model(spec, result, food_splits.source, run.run_id)
        yield dg.Output(value, metadata=metadata)

    return _model_asset


def build_model_assets(names: list[str] | None = None) -> list[dg.AssetsDefinition]:
    """`model_<name>` for each name (default: every registry entry)."""
    return [build_model_asset(name) for name in (list_models() if names is None else names)]


MODEL_ASSETS = build_model_assets()
