"""Where and how Lightning runs (`ComputeConfig`), validated up front with messages that name
the fix. The Dagster "GPU resource", `LightningCompute`, is derived from this class."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from food_assets.ml.errors import ConfigError
from food_assets.ml.models.registry import setting

PRECISIONS = ("auto", "32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
_COMPUTE_SPEED = {
    "loader_workers", "pin_memory", "persistent_workers", "prefetch_factor", "gpu_decode",
    "channels_last", "cudnn_benchmark", "compile", "compile_mode",
}  # fmt: skip
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class ComputeConfig:
    """Where and how Lightning runs (the Dagster "GPU resource", `LightningCompute`, is derived
    from this class: its fields, defaults and descriptions are the resource's).

    The defaults pick a GPU when one is present and the CPU otherwise. A multi-GPU node sets
    `devices: 4, strategy: ddp`; a cluster adds `num_nodes`.
    """

    accelerator: str = setting("auto", description="auto | cpu | gpu | cuda | mps")
    devices: int | str | list[int] = setting(
        "auto",
        description='"auto", a count like "2", or "0,1" (device indices)',
        config_type=str,
    )
    precision: str = setting(
        "auto",
        description="auto (bf16-mixed on a GPU or CPU with bf16, 16-mixed on older GPUs, "
        "32-true otherwise; ml/training/precision.py) | 32-true | 16-mixed | bf16-mixed",
    )
    strategy: str = setting("auto", description="auto | ddp | ddp_spawn | fsdp ...")
    num_nodes: int = setting(1, description="machines in a multi-node DDP run")
    deterministic: bool = setting(False, description="cuDNN/torch deterministic kernels (slower)")
    # The GPU recipe (docs/gpu.md; docs/adr/0016-gpu-input-pipeline.md). On the CPU every
    # default leaves training as it was before these switches existed.
    loader_workers: int | str = setting(
        "auto",
        description='DataLoader workers per device: "auto" (the model\'s num_workers when set, '
        "else on CUDA min(8, cores per device) with gpu_decode and cores per device - 1 "
        'without, 0 on the CPU) or a count like "8"',
        config_type=str,
    )
    pin_memory: Literal["auto", "on", "off"] = setting(
        "auto", description="page-locked loader batches for async host-to-GPU copies; auto: on CUDA"
    )
    persistent_workers: bool = setting(
        True, description="keep loader workers alive between epochs (with workers > 0)"
    )
    prefetch_factor: int = setting(
        2, description="batches each loader worker prepares ahead (with workers > 0)"
    )
    gpu_decode: Literal["auto", "on", "off"] = setting(
        "auto",
        description="decode JPEGs on the GPU (nvjpeg) and run the train/eval transforms there; "
        "workers only read file bytes. auto: on when training on CUDA; on: CUDA required",
    )
    channels_last: Literal["auto", "on", "off"] = setting(
        "auto",
        description="NHWC memory format for model and batches; auto: on CUDA and on CPUs with "
        "AVX-512",
    )
    cudnn_benchmark: Literal["auto", "on", "off"] = setting(
        "auto",
        description="let cuDNN time its convolution kernels once and keep the fastest; auto: on "
        "CUDA unless deterministic",
    )
    compile: bool = setting(False, description="torch.compile the model (slow first steps)")
    compile_mode: str = setting(
        "default",
        description="torch.compile mode: default | reduce-overhead | max-autotune | "
        "max-autotune-no-cudagraphs",
    )
    accumulate_grad_batches: int = setting(
        1, description="batches whose gradients add up before each optimizer step"
    )
    global_batch_size: int | None = setting(
        None,
        description="images per optimizer step over all devices and nodes; derives "
        "accumulate_grad_batches = global / (batch_size x devices x nodes); null: off",
    )

    def __post_init__(self) -> None:
        # Run config gives devices as text: "2" is a count, "0,1" a list of indices.
        if isinstance(self.devices, str) and self.devices.strip() != "auto":
            text = self.devices.strip()
            try:
                devices: Any = (
                    [int(v) for v in text.split(",") if v.strip()] if "," in text else int(text)
                )
            except ValueError:
                raise ConfigError(
                    f"devices {self.devices!r} is not 'auto', a count or a list of indices "
                    "such as '0,1'"
                ) from None
            object.__setattr__(self, "devices", devices)
        if str(self.precision) not in PRECISIONS:
            raise ConfigError(
                f"precision {self.precision!r} is not supported; use one of {', '.join(PRECISIONS)}"
            )
        if not isinstance(self.num_nodes, int) or self.num_nodes < 1:
            raise ConfigError(f"num_nodes must be a positive integer (got {self.num_nodes!r})")
        if isinstance(self.devices, int) and self.devices == 0:
            raise ConfigError(
                "devices must not be 0: use a count >= 1, a list of indices or 'auto'"
            )
        _check_recipe(self)

    def to_hashable(self) -> dict[str, Any]:
        """The fields that change what training produces (used to decide whether to resume).

        Loader, layout, decode and compile switches change speed (or, like the worker count,
        the augmentation's random stream) and are left out. The accumulation fields count only
        when set, so checkpoints written before they existed still resume.
        """
        record = {k: v for k, v in dataclasses.asdict(self).items() if k not in _COMPUTE_SPEED}
        if record["accumulate_grad_batches"] == 1:
            del record["accumulate_grad_batches"]
        if record["global_batch_size"] is None:
            del record["global_batch_size"]
        return record

    def resolved_precision(self, *, cpu_bf16: bool = True) -> str:
        """`precision` with `auto` resolved for this machine and accelerator (`cpu_bf16`: the
        model's `ModelSpec.cpu_bf16`, whether bf16 pays for it on a CPU)."""
        from food_assets.ml.training.precision import (
            resolve_training_precision,
            trainer_device_type,
        )

        device_type = trainer_device_type(str(self.accelerator))
        return resolve_training_precision(
            self.precision, device_type=device_type, cpu_bf16_pays=cpu_bf16
        )

    def to_trainer_kwargs(self, *, cpu_bf16: bool = True) -> dict[str, Any]:
        return {
            "accelerator": self.accelerator,
            "devices": self.devices,
            "precision": self.resolved_precision(cpu_bf16=cpu_bf16),
            "strategy": self.strategy,
            "num_nodes": self.num_nodes,
            "deterministic": self.deterministic,
        }


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_recipe(c: ComputeConfig) -> None:
    """ComputeConfig's GPU-recipe checks (run config gives `loader_workers` as text)."""
    given = workers = c.loader_workers
    if isinstance(workers, str) and workers.strip() != "auto":
        try:
            workers = int(workers.strip())
        except ValueError:
            workers = -1
    if workers != "auto" and not (_is_int(workers) and workers >= 0):
        raise ConfigError(f"loader_workers must be 'auto' or a count >= 0 (got {given!r})")
    object.__setattr__(c, "loader_workers", "auto" if workers == "auto" else workers)
    for name in ("pin_memory", "gpu_decode", "channels_last", "cudnn_benchmark"):
        if getattr(c, name) not in ("auto", "on", "off"):
            raise ConfigError(f"{name} must be auto, on or off (got {getattr(c, name)!r})")
    if not (_is_int(c.prefetch_factor) and c.prefetch_factor >= 1):
        raise ConfigError(f"prefetch_factor must be >= 1 (got {c.prefetch_factor!r})")
    if c.gpu_decode == "on" and str(c.accelerator) in ("cpu", "mps"):
        raise ConfigError(
            f"gpu_decode: on decodes with nvjpeg on a CUDA GPU, but accelerator is "
            f"{c.accelerator}: use gpu_decode: auto (on only when training on CUDA) or off"
        )
    if c.cudnn_benchmark == "on" and c.deterministic:
        raise ConfigError(
            "cudnn_benchmark: on picks convolution kernels by timing them, which deterministic: "
            "true rules out: set cudnn_benchmark to auto/off or deterministic to false"
        )
    if c.compile_mode not in COMPILE_MODES:
        raise ConfigError(
            f"compile_mode {c.compile_mode!r} is not one of {', '.join(COMPILE_MODES)}"
        )
    if c.compile_mode != "default" and not c.compile:
        raise ConfigError(
            f"compile_mode {c.compile_mode!r} only applies with compile: true: set compile: "
            "true, or leave compile_mode at default"
        )
    if not (_is_int(c.accumulate_grad_batches) and c.accumulate_grad_batches >= 1):
        raise ConfigError(
            f"accumulate_grad_batches must be >= 1 (got {c.accumulate_grad_batches!r})"
        )
    if c.global_batch_size is not None:
        if not (_is_int(c.global_batch_size) and c.global_batch_size >= 1):
            raise ConfigError(
                f"global_batch_size must be >= 1 or null (got {c.global_batch_size!r})"
            )
        if c.accumulate_grad_batches != 1:
            raise ConfigError(
                "set either global_batch_size (accumulation derived from it) or "
                "accumulate_grad_batches, not both: leave accumulate_grad_batches at 1"
            )


def accumulation_for(compute: ComputeConfig, *, batch_size: int, world_size: int) -> int:
    """Batches per optimizer step: `accumulate_grad_batches`, or derived from the global batch.

    Raises:
        ConfigError: `global_batch_size` is not a multiple of `batch_size x world_size`.
    """
    if compute.global_batch_size is None:
        return compute.accumulate_grad_batches
    per_step = batch_size * max(world_size, 1)
    steps, rest = divmod(compute.global_batch_size, per_step)
    if rest or steps < 1:
        fits = max(steps, 1) * per_step
        raise ConfigError(
            f"global_batch_size {compute.global_batch_size} is not a multiple of batch_size "
            f"{batch_size} x {world_size} device(s) = {per_step}: use {fits} (or another "
            f"multiple of {per_step}), or change batch_size"
        )
    return steps
