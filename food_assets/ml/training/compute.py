"""The GPU recipe of `ComputeConfig`, resolved on this machine and applied to Lightning.

`ComputeConfig` says what is wanted (`auto`, `on`, `off`); this module decides what that means
here and puts it where Lightning reads it:

- `trainer_options`: Trainer arguments beyond `ComputeConfig.to_trainer_kwargs` (cuDNN benchmark,
  gradient accumulation), checked against the machine before anything is written.
- `resolve_loader` -> `LoaderSettings`: the DataLoader's workers, pinned memory, prefetch, and
  whether JPEGs decode on the GPU (`gpu_input.py`).
- `ComputeRecipe`: the callback that sets the model's memory format and `torch.compile`s it.

docs/gpu.md describes each switch; docs/adr/0016-gpu-input-pipeline.md why the loader defaults
are what they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch

from food_assets.ml.errors import ConfigError
from food_assets.ml.training.config import ComputeConfig, TrainConfig, accumulation_for
from food_assets.ml.training.precision import cpu_flags

#: Loader workers on CUDA never exceed this when they only read file bytes (`gpu_decode`).
MAX_AUTO_WORKERS = 8


def expects_cuda(compute: ComputeConfig) -> bool:
    """Whether this run will train on CUDA, judged before the Trainer exists."""
    accelerator = str(compute.accelerator)
    if accelerator == "cuda":
        return True
    if accelerator in ("gpu", "auto"):
        return torch.cuda.is_available()
    return False


def on_cuda(trainer: pl.Trainer) -> bool:
    """Whether `trainer` runs on CUDA (its accelerator, as Lightning resolved it)."""
    from lightning.pytorch.accelerators import CUDAAccelerator

    return isinstance(trainer.accelerator, CUDAAccelerator)


def check_machine(compute: ComputeConfig) -> None:
    """Refuse a switch this machine cannot honour, with the fix (before anything is written)."""
    if compute.gpu_decode == "on" and not expects_cuda(compute):
        raise ConfigError(
            "gpu_decode: on needs a CUDA GPU, and this run will not train on one "
            f"(accelerator {compute.accelerator}, torch.cuda.is_available() is "
            f"{torch.cuda.is_available()}): use gpu_decode: auto (on only when training on CUDA) "
            "or off"
        )


def trainer_options(compute: ComputeConfig) -> dict[str, Any]:
    """The Trainer arguments of the recipe that `to_trainer_kwargs` does not carry."""
    check_machine(compute)
    benchmark: bool | None = None  # None: Lightning's default, the process's current flag
    if compute.cudnn_benchmark == "on":
        benchmark = True
    elif compute.cudnn_benchmark == "off":
        benchmark = False
    elif expects_cuda(compute) and not compute.deterministic:
        benchmark = True  # fixed input size: cuDNN's timed kernel choice pays off at once
    return {"benchmark": benchmark, "accumulate_grad_batches": compute.accumulate_grad_batches}


def apply_global_batch(trainer: pl.Trainer, compute: ComputeConfig, batch_size: int) -> None:
    """Derive `accumulate_grad_batches` from `global_batch_size` once the world size is known.

    Lightning reads the attribute at every step (its own `GradientAccumulationScheduler` sets
    it the same way), so setting it after construction is equivalent to the Trainer argument.
    """
    trainer.accumulate_grad_batches = accumulation_for(
        compute, batch_size=batch_size, world_size=trainer.world_size
    )


@dataclass(frozen=True)
class LoaderSettings:
    """How the training DataLoaders are built (see `resolve_loader`)."""

    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = True
    prefetch_factor: int | None = None  # None: torch's default
    gpu_decode: bool = False

    def dataloader_kwargs(self) -> dict[str, Any]:
        """`DataLoader` keyword arguments (worker-only ones only when there are workers)."""
        kwargs: dict[str, Any] = {"num_workers": self.num_workers, "pin_memory": self.pin_memory}
        if self.num_workers > 0:
            kwargs["persistent_workers"] = self.persistent_workers
            if self.prefetch_factor is not None:
                kwargs["prefetch_factor"] = self.prefetch_factor
        return kwargs


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def resolve_loader(
    compute: ComputeConfig,
    cfg: TrainConfig,
    *,
    cuda: bool,
    local_devices: int = 1,
    cores: int | None = None,
) -> LoaderSettings:
    """The loader settings of a run on this machine.

    Args:
        compute: the compute config (`loader_workers`, `pin_memory`, ..., `gpu_decode`).
        cfg: the model's training config; its `num_workers`, when set (> 0), is what
            `loader_workers: auto` uses, as before `loader_workers` existed.
        cuda: the Trainer runs on CUDA (`on_cuda(trainer)`).
        local_devices: processes on this machine (each has its own workers).
        cores: CPU cores available (default: this process's affinity).
    """
    gpu_decode = compute.gpu_decode == "on" or (compute.gpu_decode == "auto" and cuda)
    if compute.loader_workers != "auto":
        workers = int(compute.loader_workers)
    elif cfg.num_workers > 0:
        workers = cfg.num_workers
    elif cuda:
        per_device = max((cores or _cores()) // max(local_devices, 1), 1)
        # Reading bytes is cheap: a few workers keep nvjpeg fed. Decoding on the CPU needs
        # every core but one, which the training loop itself uses.
        workers = min(MAX_AUTO_WORKERS, per_device) if gpu_decode else max(per_device - 1, 1)
    else:
        workers = 0  # the CPU path as it always was: decode in the training process
    pin = compute.pin_memory == "on" or (compute.pin_memory == "auto" and cuda)
    return LoaderSettings(
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=compute.persistent_workers,
        prefetch_factor=compute.prefetch_factor,
        gpu_decode=gpu_decode,
    )


#: CPU flags under which `channels_last: auto` trains in NHWC on the CPU: oneDNN's AVX-512
#: convolution kernels are written for NHWC, and measured there every registry CNN trained
#: faster in it (1.23-1.31x images/s at 96 px: `benchmarks/training_throughput.py --layout`).
CPU_NHWC_FLAGS = frozenset({"avx512_f"})


def channels_last_for(setting: str, *, cuda: bool, flags: Iterable[str] | None = None) -> bool:
    """Whether to train in NHWC: `on`, `off`, or `auto`: on with CUDA (cuDNN's tensor-core
    kernels need no layout transposes) and on a CPU with AVX-512 (`CPU_NHWC_FLAGS`; `flags`:
    the CPU's feature flags, None: this CPU's). Elsewhere (older x86, Arm) it was not measured,
    so `auto` keeps NCHW there."""
    if setting != "auto":
        return setting == "on"
    return cuda or bool(CPU_NHWC_FLAGS & frozenset(cpu_flags() if flags is None else flags))


class ComputeRecipe(pl.Callback):
    """Applies the model-side switches: channels_last and `torch.compile`.

    `setup` tells the module whether to use channels_last (`ClassifierModule.channels_last`;
    the module converts its weights in `on_fit_start`, after Lightning moved them to the
    device). `on_fit_start` compiles the wrapped model in place (`nn.Module.compile`), which
    keeps its state-dict keys, so checkpoints and bundles are the same with compile on or off.
    """

    def __init__(self, compute: ComputeConfig) -> None:
        self.channels_last_setting = compute.channels_last
        self.compile = bool(compute.compile)
        self.compile_mode = compute.compile_mode
        self.channels_last: bool | None = None  # resolved in setup

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.channels_last = channels_last_for(self.channels_last_setting, cuda=on_cuda(trainer))
        if hasattr(pl_module, "channels_last"):
            pl_module.channels_last = self.channels_last

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.compile:
            model = getattr(pl_module, "model", pl_module)
            model.compile(mode=self.compile_mode)


def recipe_metadata(
    trainer: pl.Trainer, compute: ComputeConfig, cfg: TrainConfig
) -> dict[str, Any]:
    """What the recipe resolved to in this run (the training asset's metadata)."""
    cuda = on_cuda(trainer)
    loader = resolve_loader(compute, cfg, cuda=cuda, local_devices=trainer.num_devices)
    return {
        "accumulate_grad_batches": int(trainer.accumulate_grad_batches),
        "compile": bool(compute.compile),
        "channels_last": channels_last_for(compute.channels_last, cuda=cuda),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "gpu_decode": loader.gpu_decode,
        "loader_workers": loader.num_workers,
        "pin_memory": loader.pin_memory,
    }


__all__ = [
    "CPU_NHWC_FLAGS",
    "ComputeRecipe",
    "channels_last_for",
    "LoaderSettings",
    "apply_global_batch",
    "check_machine",
    "expects_cuda",
    "on_cuda",
    "recipe_metadata",
    "resolve_loader",
    "trainer_options",
]
