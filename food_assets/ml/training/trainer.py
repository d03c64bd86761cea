"""`build_trainer`: the Lightning Trainer of a training run, with its callbacks in order.

Shared by `train_model` and the throughput benchmark, so the benchmark measures the loop that
training really runs (history, checkpoints, precise BatchNorm, early stopping).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from food_assets.ml.errors import ConfigError
from food_assets.ml.training.callbacks import AtomicCheckpointIO, PreciseBatchNorm, TrainingHistory
from food_assets.ml.training.checkpoints import (
    BEST_CKPT,
    BEST_EMA_CKPT,
    LAST_CKPT,
    MONITOR,
    MONITOR_EMA,
)
from food_assets.ml.training.compute import ComputeRecipe, apply_global_batch, trainer_options
from food_assets.ml.training.config import ComputeConfig, TrainConfig


def _checkpoint_callbacks(ckpt_dir: Path) -> tuple[pl.Callback, pl.Callback]:
    """best.ckpt (best val/acc_top1, weights only) and last.ckpt (every epoch, full state).

    Two callbacks, not one with `save_last`: Lightning 2.6 writes `save_last` only on epochs
    that also wrote a top-k file, but resuming needs last.ckpt after *every* epoch. Both save at
    train-epoch end, after validation and after the history row, so a resumed run keeps that row.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    best = _best_checkpoint(ckpt_dir, BEST_CKPT, MONITOR)
    last = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename=Path(LAST_CKPT).stem,
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    return best, last


def _best_checkpoint(ckpt_dir: Path, name: str, monitor: str) -> pl.Callback:
    """A weights-only checkpoint of the epoch with the highest `monitor`."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    return ModelCheckpoint(
        dirpath=ckpt_dir,
        filename=Path(name).stem,
        monitor=monitor,
        mode="max",
        save_top_k=1,
        save_weights_only=True,  # only its weights are read back; last.ckpt carries the rest
        save_on_train_epoch_end=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )


def _callbacks(
    cfg: TrainConfig, ckpt_dir: Path, history: TrainingHistory, extra: Sequence[pl.Callback]
) -> list[pl.Callback]:
    """The callbacks in the order they must run: precise BN, history, checkpoints, the rest."""
    from lightning.pytorch.callbacks import EarlyStopping

    cbs: list[pl.Callback] = [history, *_checkpoint_callbacks(ckpt_dir)]
    if cfg.ema_decay:
        # The weight EMA's own best epoch, next to the raw weights' (train.py keeps the better).
        cbs.append(_best_checkpoint(ckpt_dir, BEST_EMA_CKPT, MONITOR_EMA))
    if cfg.precise_bn_batches:
        # Before the checkpoint callbacks read val/acc_top1: the statistics they save are fresh.
        cbs.insert(0, PreciseBatchNorm(cfg.precise_bn_batches))
    if cfg.early_stopping_patience:
        cbs.append(EarlyStopping(monitor=MONITOR, mode="max", patience=cfg.early_stopping_patience))
    cbs.extend(extra)
    return cbs


def build_trainer(
    cfg: TrainConfig,
    compute: ComputeConfig,
    ckpt_dir: Path,
    *,
    loggers: Sequence[Any] = (),
    callbacks: Sequence[pl.Callback] = (),
    progress_bar: bool = True,
    default_root_dir: Path | None = None,
    cpu_bf16: bool = True,
) -> tuple[pl.Trainer, TrainingHistory]:
    """The Trainer `train_model` uses (also used by the throughput benchmark). `cpu_bf16`: the
    model's `ModelSpec.cpu_bf16` (whether `precision: auto` may pick bf16 on a CPU)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    history = TrainingHistory()
    # The GPU recipe (compute.py): a switch this machine cannot honour fails here, before
    # train_model writes anything; channels_last and compile are applied by ComputeRecipe.
    recipe = trainer_options(compute)
    try:
        trainer = pl.Trainer(
            **compute.to_trainer_kwargs(cpu_bf16=cpu_bf16),
            **recipe,
            max_epochs=cfg.epochs,
            limit_train_batches=cfg.limit_train_batches,
            limit_val_batches=cfg.limit_val_batches,
            callbacks=[ComputeRecipe(compute), *_callbacks(cfg, ckpt_dir, history, callbacks)],
            logger=list(loggers) if loggers else False,
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=progress_bar,
            enable_model_summary=False,
            num_sanity_val_steps=0,  # val runs after every epoch anyway
            log_every_n_steps=1,
            default_root_dir=default_root_dir,
        )
    except (MisconfigurationException, ValueError) as exc:
        raise ConfigError(f"invalid compute config {compute}: {exc}") from exc
    apply_global_batch(trainer, compute, cfg.batch_size)
    return trainer, history


__all__ = ["build_trainer"]
