"""`fit_model`: how any registry entry is fitted; `fit_lightning`, the default hook.

An entry's own `fit` hook (CLIP) runs as it is; an entry without one trains with Lightning:
`fit_lightning` is `train_model` plus the config's policy for pretrained weights that cannot be
found (`on_missing_weights`): fail, train from random init and say so in the metadata, or skip.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.errors import WeightsNotFoundError
from food_assets.ml.models.bundle import FitResult
from food_assets.ml.models.registry import FitContext, FitHook, FitSkipped, ModelSpec
from food_assets.ml.training.config import ComputeConfig, TrainConfig
from food_assets.ml.training.train import train_model

#: The metadata key that records a fallback to random init (`on_missing_weights: scratch`).
WEIGHTS_FALLBACK = "weights_fallback"


def fit_lightning(
    spec: ModelSpec,
    splits: SplitManifest,
    config: TrainConfig,
    out_dir: str | Path,
    context: FitContext | None = None,
) -> FitResult:
    """Train `spec` with Lightning (`train_model`) under `config.on_missing_weights`.

    - `error`: a `WeightsNotFoundError` propagates.
    - `scratch`: train from random init instead (mode scratch, weights none); the result's
      metadata holds `weights_fallback` with the reason, and `context.log` is told.
    - `skip`: raise `FitSkipped` with the reason.

    `train_model` raises a missing-weights error before it writes anything under `out_dir`, so
    the fallback starts from a clean run folder.
    """
    context = context or FitContext()
    compute = context.compute or ComputeConfig()

    def train(cfg: TrainConfig) -> FitResult:
        return train_model(spec, splits, cfg, compute, out_dir, loggers=context.loggers)

    try:
        return train(config)
    except WeightsNotFoundError as exc:
        if config.on_missing_weights == "error":
            raise
        if config.on_missing_weights == "skip":
            raise FitSkipped(f"{exc} (on_missing_weights: skip)") from exc
        context.log(
            f"{exc} -- on_missing_weights=scratch: training {spec.name} from random init instead"
        )
        scratch = dataclasses.replace(config, mode="scratch", weights="none", frozen_epochs=0)
        result = train(scratch)
        result.metadata[WEIGHTS_FALLBACK] = f"scratch (requested weights not found: {exc})"
        return result


def fit_hook(spec: ModelSpec) -> FitHook:
    """The entry's fit hook: its own, else `fit_lightning` (looked up at call time, so a test
    may replace it)."""
    return spec.fit or fit_lightning


def fit_model(
    spec: ModelSpec,
    splits: SplitManifest,
    config: object,
    out_dir: str | Path,
    context: FitContext | None = None,
) -> FitResult:
    """Fit `spec` with its settings `config` (`make_config(spec, ...)`) into `out_dir`."""
    return fit_hook(spec)(spec, splits, config, out_dir, context)
