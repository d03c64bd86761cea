"""Eager PyTorch vs ONNX Runtime latency, measured in one process after warm-up.

On a shared machine absolute timings drift by 2x between runs; the two backends are therefore
timed in alternating blocks (eager, ORT, eager, ORT), so slow drift in the machine's load hits
both alike, and their ratio is the figure to compare. Blocks rather than strictly alternating
calls: ONNX Runtime's worker threads spin for a while after each run (its default, kept since it
is how it serves), and a PyTorch call squeezed in right after would pay for that spinning.
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

LATENCY_COLUMNS = ["model", "backend", "batch", "median_ms", "p90_ms", "images_per_s", "repeats"]


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
    model: nn.Module,
    onnx_path: str | os.PathLike[str],
    input_size: int,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int | Mapping[int, int] = 20,
    warmup: int | Mapping[int, int] = 3,
    *,
    name: str | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Median and 90th-percentile latency of eager PyTorch and ONNX Runtime on the CPU.

    Args:
        model: the eager model (moved to CPU in eval mode for the measurement; its device and
            mode are restored afterwards).
        onnx_path: its ONNX export.
        input_size: spatial size of the random input (the export's size).
        batch_sizes: batch sizes to time.
        repeats: timed calls per backend and batch; a mapping gives one count per batch size
            (e.g. `{1: 30, 32: 5}`, since a batch of 32 takes 32x longer).
        warmup: untimed calls per backend and batch first (allocator, ORT arena, oneDNN
            kernels); an int or a mapping per batch size like `repeats`.
        name: `model` column; default the model's class name.
        threads: threads for both backends; default the cores this process may use.
        seed: for the random input.

    Returns:
        One row per (backend, batch): `model, backend (eager|onnxruntime), batch, median_ms,
        p90_ms, images_per_s, repeats`.
    """
    threads = threads or default_threads()
    session = create_session(onnx_path, threads=threads)
    prev_threads = torch.get_num_threads()
    device = next(iter(model.parameters()), torch.empty(0)).device
    was_training = model.training
    model.eval().cpu()
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    try:
        for batch in batch_sizes:
            x = torch.randn(batch, 3, input_size, input_size, generator=gen)
            n = max(1, _per_batch(repeats, batch))
            times = _time_backends(model, session, x, _per_batch(warmup, batch), n)
            rows += _latency_rows(name or type(model).__name__, int(batch), n, times)
    finally:
        torch.set_num_threads(prev_threads)
        model.to(device).train(was_training)
    return pd.DataFrame(rows, columns=LATENCY_COLUMNS)


def _time_backends(
    model: nn.Module, session: Any, x: torch.Tensor, warmup: int, n: int
) -> dict[str, list[float]]:
    """`n` timed calls of each backend on `x` after `warmup` untimed ones, in two alternating
    blocks (see the module's docstring); seconds per call, per backend."""
    input_name = session.get_inputs()[0].name
    feed = {input_name: x.numpy()}
    for _ in range(warmup):
        model(x)
        session.run(None, feed)
    times: dict[str, list[float]] = {"eager": [], "onnxruntime": []}
    for size in ((n + 1) // 2, n // 2):  # eager, ORT, eager, ORT: load drift hits both
        times["eager"] += _time_calls(model, (x,), size)
        times["onnxruntime"] += _time_calls(session.run, (None, feed), size)
    return times


def _latency_rows(
    name: str, batch: int, repeats: int, times: Mapping[str, list[float]]
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
            }
        )
    return rows


def latency_ratio(frame: pd.DataFrame) -> pd.DataFrame:
    """Pivot `measure_latency` rows to one row per (model, batch) with `ort_over_eager`."""
    wide = frame.pivot_table(index=["model", "batch"], columns="backend", values="median_ms")
    wide = wide.rename(columns={"eager": "eager_ms", "onnxruntime": "ort_ms"}).reset_index()
    wide.columns.name = None
    wide["ort_over_eager"] = wide["ort_ms"] / wide["eager_ms"]
    return wide
