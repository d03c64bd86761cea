"""`model_<name>` for every registry entry: one factory, one MLflow run per materialization.

Trained families (`scratch`, `transfer`) go through Lightning (`food_assets.ml.training`) on the
`compute` resource; CLIP families build a zero-shot classifier or fit a linear probe. Every
model asset ends in a bundle folder (`ml/models/bundle.py`) that evaluation, Grad-CAM, ONNX
export, `predict` and the demo read.
"""

# No `from __future__ import annotations`: Dagster reads the real annotation objects.

import contextlib
import dataclasses
import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from food_assets.assets._common import md_image, md_table, plain, skipped_output, user_errors
from food_assets.ml import artifacts
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.errors import ConfigError, WeightsNotFoundError
from food_assets.ml.models import get_model_spec, list_models
from food_assets.ml.models.bundle import FitResult
from food_assets.ml.models.registry import ModelSpec
from food_assets.resources import ArtifactStore, LightningCompute

MODELS_GROUP = "models"


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


class TrainAssetConfig(dg.Config):
    """Training run config. The defaults train on the embedded sample on a CPU in minutes;
    `configs/food101.yaml` holds the GPU recipe."""

    mode: str | None = Field(
        default=None,
        description="scratch | feature_extract | finetune; None: scratch for the custom CNN, "
        "finetune for transfer models",
    )
    weights: str | None = Field(
        default=None, description="imagenet | none | /path/to/weights; None: the registry default"
    )
    on_missing_weights: Literal["error", "scratch", "skip"] = Field(
        default="scratch",
        description="when pretrained weights cannot be found offline: fail, train from scratch "
        "(recorded in metadata), or skip the asset",
    )
    epochs: int = Field(default=4, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    backbone_lr_mult: float = Field(default=0.1, gt=0, le=1)
    weight_decay: float = Field(default=0.05, ge=0)
    warmup_epochs: float = Field(default=1.0, ge=0)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    frozen_epochs: int = Field(default=0, ge=0)
    image_size: int | None = Field(default=96, description="None: the model's own size (224)")
    num_workers: int = Field(default=0, ge=0)
    seed: int = 0
    early_stopping_patience: int | None = 5
    limit_train_batches: float | None = Field(default=None, description="batches (>=1) or fraction")
    limit_val_batches: float | None = None
    precise_bn_batches: int = Field(
        default=16, ge=0, description="recompute BatchNorm statistics before each validation"
    )

    def train_config(self):
        from food_assets.ml.training import TrainConfig

        def _limit(v: float | None):
            return int(v) if v is not None and v >= 1 else v

        fields = self.model_dump(exclude={"on_missing_weights"})
        fields["limit_train_batches"] = _limit(self.limit_train_batches)
        fields["limit_val_batches"] = _limit(self.limit_val_batches)
        return TrainConfig(**fields)


class ClipAssetConfig(dg.Config):
    """CLIP run config. Without weights on this machine the asset is skipped with the reason
    (the default); `on_missing_weights: error` makes it fail instead."""

    arch: str = "ViT-B-32"
    weights: str = Field(default="openai", description="open_clip pretrained tag or a file path")
    checkpoint: str | None = Field(
        default=None, description="local checkpoint file for the `weights` tag (offline use)"
    )
    model_cfg_json: str | None = Field(
        default=None, description="a custom open_clip model config as JSON (tiny test models)"
    )
    allow_random: bool = Field(default=False, description="allow weights: none (tests only)")
    on_missing_weights: Literal["error", "skip"] = "skip"
    extra_templates: list[str] = Field(default_factory=list)
    class_name_overrides: dict[str, str] = Field(default_factory=dict)
    batch_size: int = Field(default=64, ge=1)
    k_shots: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    c_grid: list[float] = Field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0, 1000.0])
    seed: int = 0
    device: str = "auto"

    def clip_config(self):
        from food_assets.ml.models.clip import ClipConfig

        try:
            model_cfg = json.loads(self.model_cfg_json) if self.model_cfg_json else None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"model_cfg_json is not valid JSON ({exc})") from exc
        return ClipConfig(
            arch=self.arch,
            weights=self.weights,
            checkpoint=self.checkpoint,
            model_cfg=model_cfg,
            allow_random=self.allow_random,
            extra_templates=tuple(self.extra_templates),
            class_name_overrides=dict(self.class_name_overrides),
            batch_size=self.batch_size,
            k_shots=tuple(self.k_shots),
            c_grid=tuple(self.c_grid),
            seed=self.seed,
            device=self.device,
        )


@contextlib.contextmanager
def model_mlflow_run(mlflow_resource: Any, run_name: str, tags: dict[str, str]) -> Iterator[Any]:
    """A nested MLflow run per model under the Dagster run's parent run (dagster-mlflow keeps
    one parent per Dagster run, so several models in one run stay apart)."""
    import mlflow

    del mlflow_resource  # its initialisation set the tracking URI and the parent run
    with mlflow.start_run(run_name=run_name, nested=True, tags=tags) as run:
        yield run


def _log_fit_to_mlflow(result: FitResult, params: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
    for k, v in result.metadata.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            mlflow.log_metric(k, float(v))
    mlflow.log_dict({i: c for i, c in enumerate(result.card.class_names)}, "label_map.json")
    mlflow.log_dict(params, "resolved_config.json")
    mlflow.log_artifacts(str(result.bundle_dir), artifact_path="bundle")
    best = result.metadata.get("best_checkpoint")
    if best and Path(best).is_file():
        mlflow.log_artifact(str(best), artifact_path="checkpoints")
    for path in result.plots.values():
        mlflow.log_artifact(str(path), artifact_path="plots")


def _log_model_with_signature(result: FitResult) -> None:
    """The logged model: the network as MLflow's PyTorch flavour, with its input/output
    signature taken from a real forward pass."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    from food_assets.ml.models.bundle import load_bundle

    model, card = load_bundle(result.bundle_dir)
    size = card.preprocess.input_size
    x = torch.zeros(1, 3, size, size)
    with torch.inference_mode():
        y = model(x)
    # MLflow 3's default `pt2` format (torch.export) needs an example and loads without
    # unpickling; the requirements are given so that MLflow does not pip-freeze the venv.
    with warnings.catch_warnings():
        # MLflow notes that it cannot validate `Any` type hints it finds; the explicit
        # signature below is what validates inputs.
        warnings.filterwarnings("ignore", message=".*Any type hint is inferred.*")
        mlflow.pytorch.log_model(
            model,
            name="model",
            signature=infer_signature(x.numpy(), y.numpy()),
            input_example=x.numpy(),
            pip_requirements=["torch==2.14.1", "torchvision==0.29.1", "timm", "open_clip_torch"],
        )


def _fit_metadata(result: FitResult, run: Any, spec: ModelSpec) -> dict[str, Any]:
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
        meta[name] = md_image(path, alt=name)
    if run is not None:
        import mlflow

        meta["mlflow_run_id"] = run.info.run_id
        meta["mlflow_run"] = dg.MetadataValue.url(
            f"http://localhost:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        )
        meta["mlflow_tracking_uri"] = mlflow.get_tracking_uri()
    return meta


def _train(context, spec, config: TrainAssetConfig, splits, out_dir, compute, run) -> FitResult:
    import mlflow
    from lightning.pytorch.loggers import MLFlowLogger

    from food_assets.ml.training import train_model

    logger = MLFlowLogger(tracking_uri=mlflow.get_tracking_uri(), run_id=run.info.run_id)
    cfg = config.train_config()
    try:
        return train_model(spec.name, splits, cfg, compute, out_dir, loggers=[logger])
    except WeightsNotFoundError as exc:
        if config.on_missing_weights != "scratch":
            raise
        context.log.warning(
            f"{exc} -- on_missing_weights=scratch: training {spec.name} from random init instead"
        )
        mlflow.set_tag("weights_fallback", "scratch")
        scratch = dataclasses.replace(cfg, mode="scratch", weights="none", frozen_epochs=0)
        result = train_model(spec.name, splits, scratch, compute, out_dir, loggers=[logger])
        result.metadata["weights_fallback"] = f"scratch (requested weights not found: {exc})"
        return result


def build_model_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    """The `model_<name>` asset for one registry entry."""
    trained = spec.family in ("scratch", "transfer")
    config_cls = TrainAssetConfig if trained else ClipAssetConfig

    @dg.asset(
        name=f"model_{spec.name}",
        group_name=MODELS_GROUP,
        description=spec.description or f"{spec.name} ({spec.family})",
        kinds={"pytorch", "lightning" if trained else "clip"},
        pool="gpu",
        tags={"food_assets/family": spec.family},
    )
    def _model_asset(
        context: dg.AssetExecutionContext,
        config: config_cls,  # type: ignore[valid-type]
        food_splits: SplitManifest,
        artifact_store: ArtifactStore,
        compute: LightningCompute,
        mlflow: dg.ResourceParam[Any],
    ):
        out_dir = artifact_store.asset_dir(f"model_{spec.name}")
        with user_errors():
            if not trained:
                from food_assets.ml.models.clip import clip_weights_available

                clip_cfg = config.clip_config()
                ok, reason = clip_weights_available(clip_cfg)
                if not ok and config.on_missing_weights == "skip":
                    yield skipped_output(context, spec.name, reason)
                    return
            tags = {
                "dagster_run_id": context.run.run_id,
                "asset": f"model_{spec.name}",
                "model": spec.name,
                "source": food_splits.source,
            }
            with model_mlflow_run(mlflow, f"model_{spec.name}", tags) as run:
                t0 = time.perf_counter()
                if trained:
                    result = _train(
                        context, spec, config, food_splits, out_dir, compute.compute_config(), run
                    )
                elif spec.family == "zero_shot":
                    from food_assets.ml.models.clip import fit_clip_zero_shot

                    result = fit_clip_zero_shot(food_splits, clip_cfg, out_dir)
                else:
                    from food_assets.ml.models.clip import fit_clip_linear_probe

                    result = fit_clip_linear_probe(
                        food_splits,
                        clip_cfg,
                        out_dir,
                        feature_cache_dir=artifact_store.cache_dir("clip_features"),
                    )
                params = {
                    "model": spec.name,
                    "family": spec.family,
                    "source": food_splits.source,
                    **config.model_dump(),
                    **(compute.model_dump() if trained else {}),
                    "weights_source": result.card.weights_source,
                }
                artifacts.write_json(out_dir / "resolved_config.json", params)
                _log_fit_to_mlflow(result, params)
                _log_model_with_signature(result)
                metadata = _fit_metadata(result, run, spec)
                metadata["asset_seconds"] = round(time.perf_counter() - t0, 1)

        value = TrainedModel(
            name=spec.name,
            family=spec.family,
            bundle_dir=result.bundle_dir,
            class_names=tuple(result.card.class_names),
            source=food_splits.source,
            mlflow_run_id=run.info.run_id,
            metadata={k: v for k, v in result.metadata.items() if isinstance(v, (int, float, str))},
        )
        yield dg.Output(value, metadata=metadata)

    return _model_asset


MODEL_ASSETS = [build_model_asset(get_model_spec(name)) for name in list_models()]
