"""Eager PyTorch vs ONNX Runtime (fp32, and int8 when there is one) latency, measured in one
process after warm-up.

On a shared machine absolute timings drift by 2x between runs; the backends are therefore timed
in alternating blocks (eager, ORT fp32, ORT int8, eager, ORT fp32, ORT int8), so slow drift in
the machine's load hits all alike, and their ratios are the figures to compare. Blocks rather
than strictly alternating calls: when ONNX Runtime's worker threads spin after a run
(`create_session(spinning=True)`, or `OMP_WAIT_POLICY=ACTIVE`), a PyTorch call squeezed in right
after would pay for that spinning.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from food_assets.ml.export.onnx_export import create_session, default_threads

LATENCY_COLUMNS = [
    "model", "backend", "batch", "median_ms", "p90_ms", "images_per_s", "repeats", "threads",
]  # fmt: skip
#: Backend names in latency rows: eager PyTorch, ONNX Runtime on the fp32 and the int8 export.
EAGER, ORT_FP32, ORT_INT8 = "eager", "onnxruntime", "onnxruntime_int8"
#: The backend name in latency rows of each serving variant (`backend/precision`).
ROW_NAMES = {
    "onnxruntime/fp32": ORT_FP32,
    "onnxruntime/int8": ORT_INT8,
    "openvino/fp32": "openvino_fp32",
    "openvino/bf16": "openvino_bf16",
    "openvino/int8": "openvino_int8",
}

OnnxSource = str | os.PathLike[str] | bytes | Callable[[Any], Any]


def _per_batch(value: int | Mapping[int, int], batch: int) -> int:
    if isinstance(value, Mapping):
        return int(value.get(batch, min(value.values())))
    return int(value)


def _time_calls(fn: Callable[..., Any], args: tuple, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - t0)
    return out


@torch.inference_mode()
def measure_latency(
    model: nn.Module | None,
    onnx_path: OnnxSource | Mapping[str, OnnxSource],
    input_size: int,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int | Mapping[int, int] = 20,
    warmup: int | Mapping[int, int] = 3,
    *,
    name: str | None = None,
    threads: int | None = None,
    spinning: bool | None = None,
    seed: int = 0,
    extra_eager: Mapping[str, nn.Module] | None = None,
) -> pd.DataFrame:
    """Median and 90th-percentile latency of eager PyTorch and ONNX Runtime on the CPU.

    Args:
        model: the eager model (moved to CPU in eval mode for the measurement; its device and
            mode are restored afterwards); None times the ONNX files alone.
        onnx_path: its ONNX export (a path or the file's bytes), timed as backend
            `onnxruntime`; or a mapping backend name -> export, e.g. `{ORT_FP32: fp32_path,
            ORT_INT8: int8_bytes}`, to time several exports of the model in the same blocks; a
            value may also be a callable runner (an OpenVINO variant: batch -> logits).
        input_size: spatial size of the random input (the export's size).
        batch_sizes: batch sizes to time.
        repeats: timed calls per backend and batch; a mapping gives one count per batch size
            (e.g. `{1: 30, 32: 5}`, since a batch of 32 takes 32x longer).
        warmup: untimed calls per backend and batch first (allocator, ORT arena, oneDNN
            kernels); an int or a mapping per batch size like `repeats`.
        name: `model` column; default the model's class name.
        threads: threads for every backend; default the cores this process may use.
        spinning: ORT's idle-thread spinning (`create_session`); default as OMP_WAIT_POLICY.
        seed: for the random input.
        extra_eager: more eager callables timed in the same blocks, by backend name (e.g.
            `{"eager_bf16": model under torch.autocast}`); they run on CPU as given.

    Returns:
        One row per (backend, batch): `model, backend (eager | onnxruntime | ...), batch,
        median_ms, p90_ms, images_per_s, repeats, threads`.
    """
    threads = threads or default_threads()
    sources = onnx_path if isinstance(onnx_path, Mapping) else {ORT_FP32: onnx_path}
    sessions = {
        backend: src if callable(src) else create_session(src, threads=threads, spinning=spinning)
        for backend, src in sources.items()
    }
    prev_threads = torch.get_num_threads()
    device = None
    if model is not None:
        device = next(iter(model.parameters()), torch.empty(0)).device
        was_training = model.training
        model.eval().cpu()
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    label = name or (type(model).__name__ if model is not None else "model")
    rows = []
    try:
        for batch in batch_sizes:
            x = torch.randn(batch, 3, input_size, input_size, generator=gen)
            n = max(1, _per_batch(repeats, batch))
            times = _time_backends(
                model, sessions, x, _per_batch(warmup, batch), n, extra_eager or {}
            )
            rows += _latency_rows(label, int(batch), n, threads, times)
    finally:
        torch.set_num_threads(prev_threads)
        if model is not None:
            model.to(device).train(was_training)
    return pd.DataFrame(rows, columns=LATENCY_COLUMNS)


def _time_backends(
    model: nn.Module | None,
    sessions: Mapping[str, Any],
    x: torch.Tensor,
    warmup: int,
    n: int,
    extra_eager: Mapping[str, nn.Module],
) -> dict[str, list[float]]:
    """`n` timed calls of each backend on `x` after `warmup` untimed ones, in two alternating
    blocks (see the module's docstring); seconds per call, per backend."""
    calls: dict[str, tuple[Callable[..., Any], tuple]] = {}
    if model is not None:
        calls[EAGER] = (model, (x,))
    for backend, fn in extra_eager.items():
        calls[backend] = (fn, (x,))
    for backend, session in sessions.items():
        if callable(session):  # a runner (OpenVINO): float32 batch -> logits
            calls[backend] = (session, (x.numpy(),))
        else:
            calls[backend] = (session.run, (None, {session.get_inputs()[0].name: x.numpy()}))
    for _ in range(warmup):
        for fn, args in calls.values():
            fn(*args)
    times: dict[str, list[float]] = {backend: [] for backend in calls}
    for size in ((n + 1) // 2, n // 2):  # eager, ORT, eager, ORT: load drift hits all
        for backend, (fn, args) in calls.items():
            times[backend] += _time_calls(fn, args, size)
    return times


def _latency_rows(
    name: str, batch: int, repeats: int, threads: int, times: Mapping[str, list[float]]
) -> list[dict[str, Any]]:
    rows = []
    for backend, t in times.items():
        median = float(np.median(t))
        rows.append(
            {
                "model": name,
                "backend": backend,
                "batch": batch,
                "median_ms": median * 1e3,
                "p90_ms": float(np.percentile(t, 90)) * 1e3,
                "images_per_s": batch / median,
                "repeats": repeats,
                "threads": threads,
            }
        )
    return rows


def latency_ratio(frame: pd.DataFrame) -> pd.DataFrame:
    """Pivot `measure_latency` rows to one row per (model, batch): `eager_ms`, `ort_ms`,
    `ort_over_eager`, and with int8 rows `ort_int8_ms` and `int8_over_fp32`."""
    wide = frame.pivot_table(index=["model", "batch"], columns="backend", values="median_ms")
    wide = wide.rename(
        columns={EAGER: "eager_ms", ORT_FP32: "ort_ms", ORT_INT8: "ort_int8_ms"}
    ).reset_index()
    wide.columns.name = None
    wide["ort_over_eager"] = wide["ort_ms"] / wide["eager_ms"]
    if "ort_int8_ms" in wide:
        wide["int8_over_fp32"] = wide["ort_int8_ms"] / wide["ort_ms"]
    return wide


def median_ms(
    frame: pd.DataFrame | Sequence[Mapping[str, Any]], backend: str, batch: int
) -> float | None:
    """The median latency of one backend at one batch size in `measure_latency` rows (a frame
    or its records, as latency.json holds them); None when it was not measured."""
    records = frame.to_dict(orient="records") if isinstance(frame, pd.DataFrame) else frame
    for row in records:
        if row.get("backend") == backend and row.get("batch") == batch:
            value = row.get("median_ms")
            return float(value) if value is not None else None
    return None
