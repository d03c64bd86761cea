"""`plan_run`: check a training request and build its model, writing nothing.

`train_model` promises that everything that can be wrong with a request (model name, config,
weights, manifest, a corrupt checkpoint) fails before anything under `out_dir` is touched. This
module is that promise: it only reads, and what it decided travels on as a `RunPlan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch import nn

from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import ConfigError
from food_assets.ml.models.profile import count_params_and_gmacs
from food_assets.ml.models.registry import ModelSpec, get_model_spec
from food_assets.ml.models.weights import get_weights_source
from food_assets.ml.training.checkpoints import CHECKPOINT_DIR, get_config_hash, plan_resume
from food_assets.ml.training.config import ComputeConfig, TrainConfig, settings_class
from food_assets.ml.training.datamodule import check_splits


@dataclass(frozen=True)
class RunPlan:
    """Everything `train_model` decides before it touches `out_dir`.

    Building it is the validation step: when `plan_run` returns, the model name, config,
    weights, manifest and any checkpoint to resume from are known to be usable.
    """

    spec: ModelSpec
    class_names: tuple[str, ...]
    cfg: TrainConfig  # resolved: mode and weights filled in from the registry
    model: nn.Module
    preprocess: Preprocess
    split_sizes: dict[str, int]
    weights_source: str
    params: int
    gmacs: float
    ckpt_dir: Path
    config_hash: str
    record: dict[str, Any]
    resume_path: Path | None
    resume_note: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def model_name(self) -> str:
        return self.spec.name


def as_spec(model: ModelSpec | str) -> ModelSpec:
    """The registry entry: a spec as it is (a caller's own entry included), a name looked up
    once, here, at the door of training."""
    return model if isinstance(model, ModelSpec) else get_model_spec(model)


def _resolve_config(spec: ModelSpec, cfg: TrainConfig) -> TrainConfig:
    """`cfg` with mode and weights filled in from the entry; only TrainConfig models."""
    model_name = spec.name
    if not issubclass(settings_class(spec), TrainConfig):
        raise ConfigError(
            f"{model_name!r} is a {spec.family} model: it is not trained with train_model "
            f"(its settings are a {settings_class(spec).__name__}; use its registry fit hook, "
            "fit_model)"
        )
    return cfg.resolve(default_weights=spec.default_weights, model_name=model_name)


def _create_seeded_model(spec: ModelSpec, num_classes: int, cfg: TrainConfig) -> nn.Module:
    """Seed everything, then build the model: the head's random init is part of the run."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        return spec.build(num_classes=num_classes, weights=cfg.weights, **cfg.build_kwargs)
    except TypeError as exc:  # an unknown builder keyword
        raise ConfigError(
            f"build_kwargs {cfg.build_kwargs} not accepted by {spec.name!r}: {exc}"
        ) from exc


def plan_run(
    spec: ModelSpec,
    splits: SplitManifest,
    cfg: TrainConfig,
    compute: ComputeConfig,
    out_dir: Path,
) -> RunPlan:
    """Check the request and build the model; reads only, so a bad request leaves no trace."""
    cfg = _resolve_config(spec, cfg)
    split_sizes = check_splits(splits)
    preprocess = spec.preprocess().with_size(cfg.image_size)
    model = _create_seeded_model(spec, len(splits.class_names), cfg)
    weights_source = get_weights_source(model)
    params, gmacs = count_params_and_gmacs(model, preprocess.input_size)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    config_hash, record = get_config_hash(spec, splits, cfg, compute)
    resume_path, resume_note = plan_resume(ckpt_dir, config_hash)
    return RunPlan(
        spec=spec,
        class_names=tuple(splits.class_names),
        cfg=cfg,
        model=model,
        preprocess=preprocess,
        split_sizes=split_sizes,
        weights_source=weights_source,
        params=params,
        gmacs=gmacs,
        ckpt_dir=ckpt_dir,
        config_hash=config_hash,
        record=record,
        resume_path=resume_path,
        resume_note=resume_note,
    )


__all__ = ["RunPlan", "plan_run"]
