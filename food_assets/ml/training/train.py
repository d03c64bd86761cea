"""`train_model`: one registry model, one split manifest, one folder of results.

```
<out_dir>/checkpoints/last.ckpt     # every epoch; resumed from if the run config matches
<out_dir>/checkpoints/best.ckpt     # best val/acc_top1
<out_dir>/checkpoints/best_ema.ckpt # best val/acc_top1_ema (only with ema_decay > 0)
<out_dir>/checkpoints/run_config.json   # the config (and its hash) the checkpoints belong to
<out_dir>/bundle/                   # model.safetensors + card.json (ml/models/bundle.py)
<out_dir>/history.parquet           # one row per epoch
<out_dir>/training_curves.png
```

Everything that can be wrong with the request (model name, config, weights, manifest, a corrupt
checkpoint) is checked before anything under `out_dir` is touched.

`train_model` reads as its steps: `plan_run` (`plan.py`: check the request, build the model,
write nothing), `build_trainer` (`trainer.py`), claim the run folder, fit, then load the best
weights and write the bundle, history and curves. The checkpoint folder's layout and the resume
decision are in `checkpoints.py`.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import torch
from torch import nn

from food_assets.ml.artifacts import write_figure, write_json, write_parquet
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.data.transforms import Augment
from food_assets.ml.models.bundle import FitResult, ModelCard, save_bundle
from food_assets.ml.models.recipe import supports_layer_decay
from food_assets.ml.models.registry import ModelSpec
from food_assets.ml.training.callbacks import HISTORY_COLUMNS, TrainingHistory
from food_assets.ml.training.checkpoints import (
    BEST_CKPT,
    BEST_EMA_CKPT,
    CHECKPOINT_DIR,
    EMA_PREFIX,
    LAST_CKPT,
    MONITOR,
    RUN_CONFIG,
    choose_weights,
    get_config_hash,
    history_rows,
    load_checkpoint_file,
    strip_model_prefix,
)
from food_assets.ml.training.compute import on_cuda, recipe_metadata, resolve_loader
from food_assets.ml.training.config import ComputeConfig, TrainConfig
from food_assets.ml.training.datamodule import SplitDataModule
from food_assets.ml.training.module import ClassifierModule
from food_assets.ml.training.plan import RunPlan, as_spec, plan_run
from food_assets.ml.training.plots import plot_history
from food_assets.ml.training.trainer import build_trainer

log = logging.getLogger(__name__)


def _claim_run_folder(plan: RunPlan, trainer: pl.Trainer, out_dir: Path) -> int:
    """First writes under `out_dir`: set aside stale checkpoints, record the run config.

    Returns:
        The number of epochs already run when resuming, else 0.
    """
    ckpt_dir = plan.ckpt_dir
    if plan.resume_path is None and ckpt_dir.exists() and trainer.is_global_zero:
        previous = out_dir / f"{CHECKPOINT_DIR}.previous"
        shutil.rmtree(previous, ignore_errors=True)
        ckpt_dir.rename(previous)
        log.warning("%s", plan.resume_note)
    resumed_from_epoch = 0
    if plan.resume_path is not None:
        resumed_from_epoch = len(history_rows(load_checkpoint_file(plan.resume_path)))
        log.info(
            "resuming %s from %s (epoch %d)", plan.model_name, plan.resume_path, resumed_from_epoch
        )
    if trainer.is_global_zero:
        write_json(ckpt_dir / RUN_CONFIG, {"hash": plan.config_hash, **plan.record})
    return resumed_from_epoch


def _build_module(plan: RunPlan) -> ClassifierModule:
    """The LightningModule: the model plus the optimisation settings of `plan.cfg`."""
    cfg = plan.cfg
    return ClassifierModule(
        plan.model,
        num_classes=plan.num_classes,
        mode=cfg.mode,
        lr=cfg.lr,
        backbone_lr_mult=cfg.backbone_lr_mult,
        weight_decay=cfg.weight_decay,
        warmup_epochs=cfg.warmup_epochs,
        label_smoothing=cfg.label_smoothing,
        frozen_epochs=cfg.frozen_epochs,
        mixup_alpha=cfg.mixup_alpha,
        cutmix_alpha=cfg.cutmix_alpha,
        mixup_off_epochs=cfg.mixup_off_epochs,
        ema_decay=cfg.ema_decay,
        layer_decay=cfg.layer_decay,
    )


def train_augment(cfg: TrainConfig) -> Augment:
    """The train split's augmentation beyond crop and flip, from the recipe switches."""
    return Augment(
        policy=cfg.augment,
        magnitude=cfg.augment_magnitude,
        color_jitter=cfg.color_jitter,
        random_erasing=cfg.random_erasing,
    )


def _fit(
    trainer: pl.Trainer,
    module: ClassifierModule,
    splits: SplitManifest,
    plan: RunPlan,
    compute: ComputeConfig,
) -> float:
    """`trainer.fit` (resuming when planned), silencing two expected warnings; the seconds."""
    # Workers, pinned memory, prefetch and GPU decode from the compute resource (compute.py).
    loader = resolve_loader(
        compute, plan.cfg, cuda=on_cuda(trainer), local_devices=trainer.num_devices
    )
    datamodule = SplitDataModule(
        splits,
        plan.preprocess,
        batch_size=plan.cfg.batch_size,
        num_workers=plan.cfg.num_workers,
        augment=train_augment(plan.cfg),
        loader=loader,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        # We own the checkpoint folder: it holds run_config.json, or last.ckpt when resuming.
        warnings.filterwarnings(
            "ignore", message=r"Checkpoint directory .* exists and is not empty"
        )
        # A frozen backbone keeps its BatchNorm layers in eval mode on purpose.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        trainer.fit(module, datamodule=datamodule, ckpt_path=plan.resume_path, weights_only=True)
    return time.perf_counter() - start


def _load_best(
    module: ClassifierModule, ckpt_dir: Path, history_cb: TrainingHistory
) -> tuple[nn.Module, pd.DataFrame, Path, str]:
    """The model with its best-epoch weights (eval mode, CPU), the history, the checkpoint
    they came from, and which weights they are (`raw` or `ema`, `choose_weights`).

    All come from the checkpoint files, not from memory: with ddp_spawn the callbacks ran in
    child processes, and this process saw none of their state.
    """
    last_ckpt = load_checkpoint_file(ckpt_dir / LAST_CKPT)
    history = pd.DataFrame(history_rows(last_ckpt) or history_cb.rows)
    kept = choose_weights(history)[0]
    best_path = ckpt_dir / (BEST_EMA_CKPT if kept == "ema" else BEST_CKPT)
    best_state = load_checkpoint_file(best_path if best_path.exists() else ckpt_dir / LAST_CKPT)
    prefix = EMA_PREFIX if kept == "ema" else "model."
    model = module.model.cpu().to(memory_format=torch.contiguous_format)
    model.load_state_dict(strip_model_prefix(best_state["state_dict"], prefix), strict=True)
    model.eval()
    return model, history, best_path, kept


def _recipe_record(plan: RunPlan, history: pd.DataFrame) -> dict[str, Any]:
    """The recipe as it ran: the switches, which weights were kept, and why (card, metadata)."""
    cfg = plan.cfg
    kept, raw, ema = choose_weights(history)
    record: dict[str, Any] = {**cfg.recipe(), "weights_kept": kept, "val_acc_raw": raw}
    if cfg.ema_decay:
        record["val_acc_ema"] = ema
    if cfg.layer_decay is not None:
        record["layer_decay_applied"] = supports_layer_decay(plan.model)
    return record


def _kept_val_acc(recipe: dict[str, Any]) -> float:
    """The best val accuracy of the weights in the bundle (raw or EMA)."""
    key = "val_acc_ema" if recipe["weights_kept"] == "ema" else "val_acc_raw"
    return float(recipe[key])


def _best_row(history: pd.DataFrame) -> pd.Series | None:
    """The history row of the best val/acc_top1 epoch (None before any epoch ran)."""
    return history.loc[history[MONITOR].idxmax()] if len(history) else None


def _save_outputs(
    plan: RunPlan, out_dir: Path, model: nn.Module, history: pd.DataFrame
) -> tuple[ModelCard, Path, Path, Path]:
    """Write the bundle, history.parquet and the curve plot; (card, bundle, history, plot)."""
    best_row = _best_row(history)
    recipe = _recipe_record(plan, history)
    card = ModelCard(
        name=plan.model_name,
        class_names=list(plan.class_names),
        preprocess=plan.preprocess,
        build_kwargs=dict(plan.cfg.build_kwargs),
        mode=plan.cfg.mode,
        weights_source=plan.weights_source,
        metrics={
            MONITOR: _kept_val_acc(recipe),
            "val/loss": float(best_row["val/loss"]) if best_row is not None else float("nan"),
        },
        recipe=recipe,
    )
    bundle_dir = save_bundle(out_dir / "bundle", model, card)
    history_path = write_parquet(out_dir / "history.parquet", history)
    source = plan.weights_source.split(" (")[0]
    plot_path = write_figure(
        out_dir / "training_curves.png",
        plot_history(history, f"{plan.model_name} ({plan.cfg.mode}, {source})"),
    )
    return card, bundle_dir, history_path, plot_path


def _metadata(
    plan: RunPlan,
    history: pd.DataFrame,
    trainer: pl.Trainer,
    compute: ComputeConfig,
    *,
    train_seconds: float,
    resumed_from_epoch: int,
    best_path: Path,
) -> dict[str, Any]:
    """The run's metadata (the keys the asset, MLflow and the tests read)."""
    cfg = plan.cfg
    best_row = _best_row(history)
    recipe = _recipe_record(plan, history)
    seconds = float(history["train_seconds"].sum()) if len(history) else 0.0
    images = float(history["train_images"].sum()) if len(history) else 0.0
    return {
        "model": plan.model_name,
        "mode": cfg.mode,
        "weights": cfg.weights,
        "weights_source": plan.weights_source,
        "params": int(plan.params),
        "gmacs": round(float(plan.gmacs), 4),
        "image_size": plan.preprocess.input_size,
        "num_classes": plan.num_classes,
        "num_train_images": plan.split_sizes.get("train", 0),
        "num_val_images": plan.split_sizes.get("val", 0),
        "epochs_run": len(history),
        "epochs_this_call": len(history) - resumed_from_epoch,
        "best_val_acc": _kept_val_acc(recipe),
        "best_epoch": int(best_row["epoch"]) if best_row is not None else -1,
        "train_seconds": round(train_seconds, 3),
        "train_images_per_s": round(images / seconds, 2) if seconds else 0.0,
        "resumed": plan.resume_path is not None,
        "resumed_from_epoch": resumed_from_epoch,
        "resume_note": plan.resume_note,
        "stopped_early": len(history) < cfg.epochs,
        "best_checkpoint": str(best_path),
        "last_checkpoint": str(plan.ckpt_dir / LAST_CKPT),
        "config_hash": plan.config_hash,
        "accelerator": type(trainer.accelerator).__name__.replace("Accelerator", "").lower(),
        "devices": int(trainer.num_devices) * int(trainer.num_nodes),
        "strategy": type(trainer.strategy).__name__,
        "precision": str(trainer.precision),  # as run: `auto` resolved (precision.py)
        "precision_requested": compute.precision,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "epochs": cfg.epochs,
        **recipe_metadata(trainer, compute, cfg),  # accumulation, compile, layout, loader
        # The switches are run params already (TrainConfig fields); here is what they led to.
        **{k: v for k, v in recipe.items() if k not in cfg.recipe()},
    }


def _finish(
    plan: RunPlan,
    out_dir: Path,
    module: ClassifierModule,
    history_cb: TrainingHistory,
    trainer: pl.Trainer,
    compute: ComputeConfig,
    train_seconds: float,
    resumed_from_epoch: int,
) -> FitResult:
    """After the fit (rank 0 only): best weights into the bundle, history, plot, metadata."""
    model, history, best_path, _ = _load_best(module, plan.ckpt_dir, history_cb)
    card, bundle_dir, history_path, plot_path = _save_outputs(plan, out_dir, model, history)
    metadata = _metadata(
        plan,
        history,
        trainer,
        compute,
        train_seconds=train_seconds,
        resumed_from_epoch=resumed_from_epoch,
        best_path=best_path,
    )
    return FitResult(
        bundle_dir=bundle_dir,
        card=card,
        metadata=metadata,
        history=history,
        plots={"training_curves": plot_path},
        artifacts={
            "history": history_path,
            "best_checkpoint": best_path,
            "last_checkpoint": plan.ckpt_dir / LAST_CKPT,
        },
    )


def train_model(
    model: ModelSpec | str,
    splits: SplitManifest,
    cfg: TrainConfig,
    compute: ComputeConfig,
    out_dir: str | Path,
    *,
    loggers: Sequence[Any] = (),
    callbacks: Sequence[pl.Callback] = (),
    progress_bar: bool = True,
) -> FitResult:
    """Train a registry model on a split manifest with Lightning and save its bundle.

    Resumes from `out_dir/checkpoints/last.ckpt` when it was written under the same run config
    (model, classes, manifest content, `cfg` except `num_workers`, `compute`); a different
    config starts fresh and moves the old checkpoints to `checkpoints.previous`.

    Args:
        model: the registry entry whose settings are a `TrainConfig` (a `list_models()` name is
            looked up once, here; everything after receives the spec).
        splits: the `food_splits` asset value (train and val rows are used).
        cfg: training configuration (mode and weights resolved from the registry if None).
            `cfg.on_missing_weights` is not applied here (missing weights raise):
            `fit_lightning`, the registry's fit hook, applies it.
        compute: accelerator, devices, precision, strategy, nodes.
        out_dir: run folder (see the module docstring for its layout).
        loggers: Lightning loggers, e.g. `MLFlowLogger(run_id=...)` for per-epoch metrics.
        callbacks: extra Lightning callbacks.
        progress_bar: show Lightning's progress bar.

    Returns:
        FitResult with the bundle, card, per-epoch history, the curve plot and metadata
        (params, gmacs, mode, weights_source, epochs_run, best_val_acc, train_seconds,
        resumed_from_epoch, best_checkpoint, train_images_per_s, ...). Under multi-process DDP
        launched externally (torchrun), only global rank 0 writes; other ranks return a result
        whose metadata holds just `global_rank`.

    Raises:
        UnknownModelError, ConfigError, WeightsNotFoundError, CheckpointError, DataSourceError:
            before anything under `out_dir` is written.
    """
    out_dir = Path(out_dir)
    plan = plan_run(as_spec(model), splits, cfg, compute, out_dir)
    trainer, history_cb = build_trainer(
        plan.cfg,
        compute,
        plan.ckpt_dir,
        loggers=loggers,
        callbacks=callbacks,
        progress_bar=progress_bar,
        default_root_dir=out_dir,
        cpu_bf16=plan.spec.cpu_bf16,
    )
    # From here on the request is known to be valid: touch the run folder.
    resumed_from_epoch = _claim_run_folder(plan, trainer, out_dir)
    module = _build_module(plan)
    train_seconds = _fit(trainer, module, splits, plan, compute)
    if not trainer.is_global_zero:  # DDP launched by torchrun: only global rank 0 writes
        metadata = {"global_rank": trainer.global_rank}
        return FitResult(out_dir / "bundle", card=None, metadata=metadata)  # type: ignore[arg-type]
    return _finish(
        plan, out_dir, module, history_cb, trainer, compute, train_seconds, resumed_from_epoch
    )


__all__ = [
    "HISTORY_COLUMNS",
    "build_trainer",
    "get_config_hash",
    "load_checkpoint_file",
    "train_model",
]
