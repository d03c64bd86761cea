"""`train_model`: one registry model, one split manifest, one folder of results.

```
<out_dir>/checkpoints/last.ckpt     # every epoch; resumed from if the run config matches
<out_dir>/checkpoints/best.ckpt     # best val/acc_top1
<out_dir>/checkpoints/run_config.json   # the config (and its hash) the checkpoints belong to
<out_dir>/bundle/                   # model.safetensors + card.json (ml/models/bundle.py)
<out_dir>/history.parquet           # one row per epoch
<out_dir>/training_curves.png
```

Everything that can be wrong with the request (model name, config, weights, manifest, a corrupt
checkpoint) is checked before anything under `out_dir` is touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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

from food_assets.ml.artifacts import write_figure, write_json, write_parquet
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.errors import CheckpointError, ConfigError
from food_assets.ml.models.bundle import FitResult, ModelCard, save_bundle
from food_assets.ml.models.profile import count_params_and_gmacs
from food_assets.ml.models.registry import create_model, get_model_spec
from food_assets.ml.models.weights import get_weights_source
from food_assets.ml.training.callbacks import (
    HISTORY_COLUMNS,
    AtomicCheckpointIO,
    PreciseBatchNorm,
    TrainingHistory,
)
from food_assets.ml.training.config import ComputeConfig, TrainConfig
from food_assets.ml.training.datamodule import SplitDataModule, check_splits
from food_assets.ml.training.module import ClassifierModule

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"
BEST_CKPT = "best.ckpt"
RUN_CONFIG = "run_config.json"
MONITOR = "val/acc_top1"


def get_config_hash(
    model_name: str, splits: SplitManifest, cfg: TrainConfig, compute: ComputeConfig
) -> tuple[str, dict[str, Any]]:
    """Hash of everything that changes what training produces (data content included)."""
    spec = get_model_spec(model_name)
    cfg = cfg.resolve(default_weights=spec.default_weights, model_name=model_name)
    record = {
        "model": model_name,
        "class_names": list(splits.class_names),
        "manifest_sha256": hashlib.sha256(splits.path.read_bytes()).hexdigest(),
        "train": cfg.to_hashable(),
        "compute": dataclasses.asdict(compute),
    }
    blob = json.dumps(record, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest(), record


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """Read a Lightning checkpoint without unpickling code; CheckpointError if unreadable."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, unpickling and EOF errors come in many types
        raise CheckpointError(
            f"checkpoint {path} is corrupt ({type(exc).__name__}); delete it (or its folder) to "
            "start this training run over"
        ) from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint; delete it to start over")
    return ckpt


def _plan_resume(ckpt_dir: Path, config_hash: str) -> tuple[Path | None, str]:
    """Decide whether to resume. Reads only: nothing is moved or written here."""
    last = ckpt_dir / LAST_CKPT
    if not last.exists():
        return None, ""
    try:
        stored = json.loads((ckpt_dir / RUN_CONFIG).read_text()).get("hash")
    except (OSError, ValueError, AttributeError):
        stored = None
    if stored != config_hash:
        return None, (
            f"{last} belongs to another run config (or has no {RUN_CONFIG}): started fresh; the "
            f"old checkpoints were moved to {ckpt_dir.name}.previous"
        )
    load_checkpoint_file(last)  # a corrupt file is an error now, not a crash mid-fit
    return last, f"resumed from {last}"


def _strip_model_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}


def plot_history(history: pd.DataFrame, title: str):
    """Loss and top-1 accuracy per epoch, train vs val (a matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    for split, style in (("train", "-o"), ("val", "--s")):
        ax_loss.plot(history["epoch"] + 1, history[f"{split}/loss"], style, label=split)
        ax_acc.plot(history["epoch"] + 1, history[f"{split}/acc_top1"], style, label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def build_trainer(
    cfg: TrainConfig,
    compute: ComputeConfig,
    ckpt_dir: Path,
    *,
    loggers: Sequence[Any] = (),
    callbacks: Sequence[pl.Callback] = (),
    progress_bar: bool = True,
    default_root_dir: Path | None = None,
) -> tuple[pl.Trainer, TrainingHistory]:
    """The Trainer `train_model` uses (also used by the throughput benchmark)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    history = TrainingHistory()
    # Two checkpoint callbacks: Lightning 2.6 writes `save_last` only on epochs that also wrote
    # a top-k file, but resuming needs last.ckpt after *every* epoch. Both save at train-epoch
    # end, after validation and after the history row, so a resumed run keeps that row.
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename=Path(BEST_CKPT).stem,
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        save_weights_only=True,  # only its weights are read back; last.ckpt carries the rest
        save_on_train_epoch_end=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename=Path(LAST_CKPT).stem,
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    cbs: list[pl.Callback] = [history, best, last]
    if cfg.precise_bn_batches:
        # Before the checkpoint callbacks read val/acc_top1: the statistics they save are fresh.
        cbs.insert(0, PreciseBatchNorm(cfg.precise_bn_batches))
    if cfg.early_stopping_patience:
        cbs.append(EarlyStopping(monitor=MONITOR, mode="max", patience=cfg.early_stopping_patience))
    cbs.extend(callbacks)
    try:
        trainer = pl.Trainer(
            **compute.to_trainer_kwargs(),
            max_epochs=cfg.epochs,
            limit_train_batches=cfg.limit_train_batches,
            limit_val_batches=cfg.limit_val_batches,
            callbacks=cbs,
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
    return trainer, history


def train_model(
    model_name: str,
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
        model_name: a `list_models()` name whose settings are a `TrainConfig`.
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
    spec = get_model_spec(model_name)
    if not issubclass(spec.config_type, TrainConfig):
        raise ConfigError(
            f"{model_name!r} is a {spec.family} model: it is not trained with train_model "
            f"(its settings are a {spec.config_type.__name__}; use its registry fit hook, "
            "spec.fit)"
        )
    cfg = cfg.resolve(default_weights=spec.default_weights, model_name=model_name)
    split_sizes = check_splits(splits)
    num_classes = len(splits.class_names)
    preprocess = spec.preprocess().with_size(cfg.image_size)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        model = create_model(
            model_name, num_classes=num_classes, weights=cfg.weights, **cfg.build_kwargs
        )
    except TypeError as exc:  # an unknown builder keyword
        raise ConfigError(
            f"build_kwargs {cfg.build_kwargs} not accepted by {model_name!r}: {exc}"
        ) from exc
    weights_source = get_weights_source(model)
    params, gmacs = count_params_and_gmacs(model, preprocess.input_size)

    ckpt_dir = out_dir / CHECKPOINT_DIR
    config_hash, record = get_config_hash(model_name, splits, cfg, compute)
    resume_path, resume_note = _plan_resume(ckpt_dir, config_hash)
    trainer, history_cb = build_trainer(
        cfg,
        compute,
        ckpt_dir,
        loggers=loggers,
        callbacks=callbacks,
        progress_bar=progress_bar,
        default_root_dir=out_dir,
    )

    # From here on the request is known to be valid: touch the run folder.
    if resume_path is None and ckpt_dir.exists() and trainer.is_global_zero:
        previous = out_dir / f"{CHECKPOINT_DIR}.previous"
        shutil.rmtree(previous, ignore_errors=True)
        ckpt_dir.rename(previous)
        log.warning("%s", resume_note)
    resumed_from_epoch = 0
    if resume_path is not None:
        resumed_from_epoch = len(_history_rows(load_checkpoint_file(resume_path)))
        log.info("resuming %s from %s (epoch %d)", model_name, resume_path, resumed_from_epoch)
    if trainer.is_global_zero:
        write_json(ckpt_dir / RUN_CONFIG, {"hash": config_hash, **record})

    module = ClassifierModule(
        model,
        num_classes=num_classes,
        mode=cfg.mode,
        lr=cfg.lr,
        backbone_lr_mult=cfg.backbone_lr_mult,
        weight_decay=cfg.weight_decay,
        warmup_epochs=cfg.warmup_epochs,
        label_smoothing=cfg.label_smoothing,
        frozen_epochs=cfg.frozen_epochs,
    )
    datamodule = SplitDataModule(
        splits, preprocess, batch_size=cfg.batch_size, num_workers=cfg.num_workers
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        # We own the checkpoint folder: it holds run_config.json, or last.ckpt when resuming.
        warnings.filterwarnings(
            "ignore", message=r"Checkpoint directory .* exists and is not empty"
        )
        # A frozen backbone keeps its BatchNorm layers in eval mode on purpose.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path, weights_only=True)
    train_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return FitResult(
            bundle_dir=out_dir / "bundle",
            card=None,  # type: ignore[arg-type]
            metadata={"global_rank": trainer.global_rank},
        )

    # With ddp_spawn the callbacks ran in child processes: read what they saved.
    last_ckpt = load_checkpoint_file(ckpt_dir / LAST_CKPT)
    rows = _history_rows(last_ckpt) or history_cb.rows
    history = pd.DataFrame(rows)
    best_path = ckpt_dir / BEST_CKPT
    best_state = load_checkpoint_file(best_path if best_path.exists() else ckpt_dir / LAST_CKPT)
    model = module.model.cpu().to(memory_format=torch.contiguous_format)
    model.load_state_dict(_strip_model_prefix(best_state["state_dict"]), strict=True)
    model.eval()

    best_row = history.loc[history[MONITOR].idxmax()] if len(history) else None
    best_val_acc = float(best_row[MONITOR]) if best_row is not None else float("nan")
    card = ModelCard(
        name=model_name,
        class_names=list(splits.class_names),
        preprocess=preprocess,
        build_kwargs=dict(cfg.build_kwargs),
        mode=cfg.mode,
        weights_source=weights_source,
        metrics={
            MONITOR: best_val_acc,
            "val/loss": float(best_row["val/loss"]) if best_row is not None else float("nan"),
        },
    )
    bundle_dir = save_bundle(out_dir / "bundle", model, card)
    history_path = write_parquet(out_dir / "history.parquet", history)
    plot_path = write_figure(
        out_dir / "training_curves.png",
        plot_history(history, f"{model_name} ({cfg.mode}, {weights_source.split(' (')[0]})"),
    )
    seconds = float(history["train_seconds"].sum()) if len(history) else 0.0
    images = float(history["train_images"].sum()) if len(history) else 0.0
    metadata = {
        "model": model_name,
        "mode": cfg.mode,
        "weights": cfg.weights,
        "weights_source": weights_source,
        "params": int(params),
        "gmacs": round(float(gmacs), 4),
        "image_size": preprocess.input_size,
        "num_classes": num_classes,
        "num_train_images": split_sizes.get("train", 0),
        "num_val_images": split_sizes.get("val", 0),
        "epochs_run": len(history),
        "epochs_this_call": len(history) - resumed_from_epoch,
        "best_val_acc": best_val_acc,
        "best_epoch": int(best_row["epoch"]) if best_row is not None else -1,
        "train_seconds": round(train_seconds, 3),
        "train_images_per_s": round(images / seconds, 2) if seconds else 0.0,
        "resumed": resume_path is not None,
        "resumed_from_epoch": resumed_from_epoch,
        "resume_note": resume_note,
        "stopped_early": len(history) < cfg.epochs,
        "best_checkpoint": str(best_path),
        "last_checkpoint": str(ckpt_dir / LAST_CKPT),
        "config_hash": config_hash,
        "accelerator": type(trainer.accelerator).__name__.replace("Accelerator", "").lower(),
        "devices": int(trainer.num_devices) * int(trainer.num_nodes),
        "strategy": type(trainer.strategy).__name__,
        "precision": compute.precision,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "epochs": cfg.epochs,
    }
    return FitResult(
        bundle_dir=bundle_dir,
        card=card,
        metadata=metadata,
        history=history,
        plots={"training_curves": plot_path},
        artifacts={
            "history": history_path,
            "best_checkpoint": best_path,
            "last_checkpoint": ckpt_dir / LAST_CKPT,
        },
    )


def _history_rows(ckpt: dict[str, Any]) -> list[dict[str, Any]]:
    state = (ckpt.get("callbacks") or {}).get("TrainingHistory") or {}
    return [dict(r) for r in state.get("rows", [])]


__all__ = [
    "HISTORY_COLUMNS",
    "build_trainer",
    "get_config_hash",
    "load_checkpoint_file",
    "plot_history",
    "train_model",
]
