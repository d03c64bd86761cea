"""`precision: auto`, resolved against this machine, for training and for evaluation.

Training (a Lightning `precision` string):

- CUDA: `bf16-mixed` when the GPU does bf16 (`torch.cuda.is_bf16_supported()`, Ampere and
  later), else `16-mixed` (fp16 autocast with a gradient scaler).
- CPU: `bf16-mixed` when the CPU has native bf16 instructions (AVX-512 BF16 or AMX-BF16), else
  `32-true`. Without them bf16 is emulated and slower than fp32.
- Anything else (MPS, ...): `32-true`.

Evaluation (`fp32` or `bf16`): the forward pass under `torch.autocast(device, torch.bfloat16)`
where training would pick bf16, fp32 otherwise. docs/adr/0014-bf16-auto-and-decode-cache.md says
why `auto` is the default and what it costs in accuracy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch

from food_assets.ml.errors import ConfigError

#: CPU feature flags (Linux /proc/cpuinfo and `torch.cpu.get_capabilities()` spelling) that
#: mean native bf16 matrix arithmetic.
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
EVAL_PRECISIONS = ("auto", "fp32", "bf16")


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags that are set (cpuinfo via `torch.cpu.get_capabilities`)."""
    try:
        caps = torch.cpu.get_capabilities()
    except Exception:  # an exotic platform without cpuinfo: assume nothing
        return frozenset()
    return frozenset(k for k, v in caps.items() if v is True)


def cpu_has_bf16(flags: Iterable[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (`flags`: the CPU's flags; None: this CPU's)."""
    return bool(CPU_BF16_FLAGS & frozenset(cpu_flags() if flags is None else flags))


def resolve_training_precision(
    precision: str,
    *,
    device_type: str,
    flags: Iterable[str] | None = None,
    cuda_bf16: bool | None = None,
    cpu_bf16_pays: bool = True,
) -> str:
    """The Lightning precision for `precision` (`auto` or an explicit Lightning value).

    Args:
        precision: `auto`, or a Lightning precision string, returned unchanged.
        device_type: where the run trains: `cuda`, `cpu`, `mps` (`trainer_device_type`).
        flags: the CPU's feature flags; None: this CPU's.
        cuda_bf16: whether the GPU does bf16; None: ask torch.
        cpu_bf16_pays: whether bf16 speeds up this architecture on a CPU (`ModelSpec.cpu_bf16`);
            False keeps fp32 on the CPU even where it has bf16 instructions.
    """
    if precision != "auto":
        return precision
    if device_type == "cuda":
        if cuda_bf16 is None:
            cuda_bf16 = torch.cuda.is_bf16_supported()
        return "bf16-mixed" if cuda_bf16 else "16-mixed"
    if device_type == "cpu":
        return "bf16-mixed" if cpu_bf16_pays and cpu_has_bf16(flags) else "32-true"
    return "32-true"


def trainer_device_type(accelerator: str) -> str:
    """`cuda`, `cpu` or `mps`: where a Trainer with this `accelerator` runs, judged before it
    exists (Lightning's `auto` order: CUDA, then MPS, then the CPU)."""
    if accelerator in ("gpu", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu" if accelerator == "auto" else "cuda"  # gpu without one: Lightning's error
    return accelerator


def resolve_eval_precision(
    precision: str, device: str | torch.device, *, flags: Iterable[str] | None = None
) -> str:
    """`fp32` or `bf16` for a forward pass on `device` (`precision`: auto, fp32 or bf16).

    Raises:
        ConfigError: an unknown value, or bf16 asked for on a device without it.
    """
    if precision not in EVAL_PRECISIONS:
        raise ConfigError(
            f"precision {precision!r} is not one of {', '.join(EVAL_PRECISIONS)}: use auto "
            "(bf16 where the hardware has it), fp32 or bf16"
        )
    kind = torch.device(device).type
    if precision == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if kind == "cpu" and cpu_has_bf16(flags) else "fp32"
    if precision == "bf16" and kind not in ("cpu", "cuda"):
        raise ConfigError(f"precision bf16 runs on cpu or cuda, not {kind}: use fp32 or auto")
    return precision


@contextlib.contextmanager
def eval_autocast(precision: str, device: str | torch.device) -> Iterator[None]:
    """bf16 autocast on `device` for `precision == "bf16"` (a resolved value), else nothing."""
    kind = torch.device(device).type
    with torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


__all__ = [
    "CPU_BF16_FLAGS",
    "EVAL_PRECISIONS",
    "cpu_flags",
    "cpu_has_bf16",
    "eval_autocast",
    "resolve_eval_precision",
    "resolve_training_precision",
    "trainer_device_type",
]
