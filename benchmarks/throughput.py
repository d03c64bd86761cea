"""Throughput probes for the GPU recipe: the loader alone, the model on in-memory tensors, and
the real training loop, measured the same way (images per second over steady-state steps).

`benchmarks/loader_vs_model.py` and `benchmarks/gpu_check.py` use these; the loader must keep up
with the model (loader images/s >= 0.9 x the in-memory step rate) for the GPU never to wait.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from food_assets.ml.training.config import ComputeConfig, TrainConfig


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(pl.Callback):
    """Images per second of training steps, after `warmup` steps (cuDNN autotuning, compile).

    The clock starts at the end of step `warmup` and stops at the end of the last step, with the
    device synchronised at both ends, so queued GPU work is counted.
    """

    def __init__(self, warmup: int = 3) -> None:
        self.warmup = warmup
        self.images = 0
        self.steps = 0
        self._t0: float | None = None
        self._t1: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 < self.warmup:
            return
        _sync(pl_module.device)
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
            return
        self.images += int(batch[1].shape[0]) * trainer.world_size
        self.steps += 1
        self._t1 = now

    @property
    def images_per_s(self) -> float:
        if self._t0 is None or self._t1 is None or self._t1 <= self._t0:
            return float("nan")
        return self.images / (self._t1 - self._t0)


class DeviceGuard(pl.Callback):
    """Fails the run at the first training step that did not run on CUDA.

    Checks the module's parameters, the batch the step received, and that CUDA memory was
    allocated: a run that fell back to the CPU (a wrong accelerator, a CPU-only torch) stops
    with a message instead of printing CPU figures as GPU ones.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        check_on_cuda(pl_module, batch[0], what=f"training step {batch_idx}")


def check_on_cuda(model: torch.nn.Module, x: torch.Tensor, *, what: str) -> None:
    """Raise RuntimeError unless `model`'s parameters and `x` are on CUDA and memory was used."""
    param = next(model.parameters())
    if param.device.type != "cuda" or x.device.type != "cuda":
        raise RuntimeError(
            f"{what} ran on the CPU (parameters on {param.device}, batch on {x.device}) although "
            "CUDA was asked for"
        )
    if torch.cuda.max_memory_allocated(param.device) <= 0:
        raise RuntimeError(f"{what}: no CUDA memory was allocated; the work did not run on it")


class _RepeatBatch(Dataset):
    """The same ready-made batch, `n` times (`batch_size=None` loader): no decode, no copy."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n: int) -> None:
        self.x, self.y, self.n = x, y, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y


def in_memory_images_per_s(
    model_name: str,
    cfg: TrainConfig,
    compute: ComputeConfig,
    out_dir: Path,
    *,
    num_classes: int,
    steps: int = 30,
    warmup: int = 5,
    device: str = "cpu",
    callbacks: tuple[pl.Callback, ...] = (),
) -> float:
    """Training images/s of `model_name` on one batch already on `device`: the model's limit.

    The same module, Trainer and compute recipe as `train_model` (`build_trainer`: precision,
    channels_last, compile, cuDNN benchmark), fed a batch that is already on the device, so no
    loader, decode or host-to-device copy is in the way. Random init (`weights="none"`).
    """
    from food_assets.ml.models.registry import create_model, get_model_spec
    from food_assets.ml.training.module import ClassifierModule
    from food_assets.ml.training.trainer import build_trainer

    size = get_model_spec(model_name).preprocess().with_size(cfg.image_size).input_size
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.batch_size, 3, size, size, generator=g).to(device)
    y = torch.randint(0, num_classes, (cfg.batch_size,), generator=g).to(device)
    pl.seed_everything(cfg.seed, verbose=False)
    model = create_model(model_name, num_classes=num_classes, weights="none", **cfg.build_kwargs)
    module = ClassifierModule(
        model, num_classes=num_classes, mode="scratch", lr=cfg.lr, weight_decay=cfg.weight_decay,
        warmup_epochs=0.0, label_smoothing=cfg.label_smoothing,
    )  # fmt: skip
    run_cfg = TrainConfig(
        mode="scratch", epochs=1, batch_size=cfg.batch_size, image_size=cfg.image_size,
        warmup_epochs=0.0, early_stopping_patience=None, precise_bn_batches=0,
        limit_train_batches=warmup + steps, limit_val_batches=1,
    )  # fmt: skip
    timer = StepTimer(warmup=warmup)
    trainer, _ = build_trainer(
        run_cfg, compute, out_dir / "checkpoints", callbacks=(timer, *callbacks),
        progress_bar=False, default_root_dir=out_dir,
    )  # fmt: skip

    def loader(n: int) -> DataLoader:
        return DataLoader(_RepeatBatch(x, y, n), batch_size=None)

    trainer.fit(module, train_dataloaders=loader(warmup + steps), val_dataloaders=loader(1))
    return timer.images_per_s


def loader_images_per_s(
    datamodule: Any, device: str, *, batches: int = 30, warmup: int = 3
) -> tuple[float, int]:
    """Images/s of the training loader alone, batches made model-ready on `device`.

    Iterates `datamodule.train_dataloader()` and passes each batch through the data module's
    `transfer_batch_to_device` (where GPU decode and the GPU transforms run). Returns
    (images/s after `warmup` batches, batches timed); fewer batches when the epoch is shorter.
    """
    datamodule.setup("fit")
    dev = torch.device(device)
    images, timed, t0 = 0, 0, None
    for i, batch in enumerate(datamodule.train_dataloader()):
        x, _ = datamodule.transfer_batch_to_device(batch, dev, 0)
        if i + 1 == warmup:
            _sync(dev)
            t0 = time.perf_counter()
        elif i + 1 > warmup:
            images += int(x.shape[0])
            timed += 1
        if timed >= batches:
            break
    _sync(dev)
    if t0 is None or timed == 0:
        return float("nan"), 0
    return images / (time.perf_counter() - t0), timed


__all__ = [
    "DeviceGuard",
    "StepTimer",
    "check_on_cuda",
    "in_memory_images_per_s",
    "loader_images_per_s",
]
