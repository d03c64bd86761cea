"""OpenVINO as a serving backend for the project's ONNX exports (the same files ONNX Runtime runs).

OpenVINO reads the `.onnx` files directly (`Core.read_model`), so no second export format is
written. What it adds on x86: AMX kernels for bf16 and for int8 (ONNX Runtime's CPU provider runs
int8 convolutions on VNNI kernels only), so the very int8 QDQ file `onnx_<name>` already writes
runs several times faster on a CPU with AMX (ADR 0021).

- `fp32`: the fp32 file with `INFERENCE_PRECISION_HINT = f32` (OpenVINO would otherwise run it
  in bf16 on a CPU with AMX, silently: a precision must be asked for, never inherited).
- `bf16`: the fp32 file with `INFERENCE_PRECISION_HINT = bf16` (refused on a CPU without bf16).
- `int8`: the int8 QDQ file, its float layers (the classifier, kept out of quantization) at
  f32 as ONNX Runtime runs them, not at OpenVINO's default (bf16 on AMX): one rounding step
  fewer between the gated numerics and the served ones, at no measurable cost (they are a
  sliver of the work).

A model is compiled once per process and kept (`compile_openvino` caches by file, precision,
threads, hint and batch size), and OpenVINO's own model cache (`CACHE_DIR`) keeps the compiled
blob on disk so the next process skips most of the compilation. The thread count and the
latency/throughput hint are always set explicitly.

No network: only `Core`, `read_model` and `compile_model` are used. OpenVINO's telemetry lives in
its model-conversion tools (`openvino.tools.ovc`), which this module never calls.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from food_assets.ml.errors import CheckpointError, ConfigError

#: The precisions OpenVINO serves, and the inference-precision hint each is compiled with.
HINTS: dict[str, str] = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
MODES = ("latency", "throughput")
#: Where OpenVINO's model cache lives unless `FOOD_ASSETS_OPENVINO_CACHE` says otherwise.
DEFAULT_CACHE = Path.home() / ".cache" / "food_assets" / "openvino"

_LOCK = threading.Lock()
_COMPILED: dict[tuple, Any] = {}
_CORE: Any = None


def openvino_status() -> tuple[bool, str]:
    """(importable, why not / the version). A machine without OpenVINO still serves through
    ONNX Runtime; the serving rule asks this before it offers an OpenVINO variant."""
    try:
        import openvino as ov
    except Exception as exc:  # ImportError, or a broken native library (OSError)
        return False, f"openvino is not installed here ({type(exc).__name__}: {exc})"
    return True, f"openvino {ov.__version__}"


def cache_dir() -> Path | None:
    """OpenVINO's on-disk model cache: `FOOD_ASSETS_OPENVINO_CACHE`, else `DEFAULT_CACHE`; an
    empty value turns the disk cache off (None; `Path("")` would be the working directory)."""
    value = os.environ.get("FOOD_ASSETS_OPENVINO_CACHE")
    if value is None:
        return DEFAULT_CACHE
    return Path(value).expanduser() if value.strip() else None


def _core() -> Any:
    global _CORE
    if _CORE is None:
        ok, why = openvino_status()
        if not ok:
            raise ConfigError(f"{why}; pip install openvino, or serve with --backend onnxruntime")
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively here (AVX512-BF16 or AMX)."""
    caps = _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in caps


def compile_openvino(
    path: str | os.PathLike[str],
    precision: str,
    *,
    threads: int | None = None,
    mode: str = "latency",
    batch: int | None = None,
) -> Any:
    """An OpenVINO `CompiledModel` for an export, compiled once per process (and cached on disk).

    Args:
        path: the `.onnx` file (fp32 for `fp32` / `bf16`, the int8 file for `int8`).
        precision: `fp32`, `bf16` or `int8` (`HINTS`).
        threads: `INFERENCE_NUM_THREADS`; default the cores this process may use.
        mode: `PERFORMANCE_HINT`: `latency` (one request at a time, the demo's and predict's
            case) or `throughput`.
        batch: a static batch size (the graph is reshaped: OpenVINO's kernels for a known shape
            are faster); None keeps the export's dynamic batch axis.

    Raises:
        ConfigError: OpenVINO absent, an unknown precision or mode, or bf16 on a CPU without it.
        CheckpointError: OpenVINO cannot read or compile the file.
    """
    from food_assets.ml.export.onnx_export import default_threads

    if precision not in HINTS:
        raise ConfigError(
            f"OpenVINO precision must be one of {', '.join(HINTS)}, not {precision!r}"
        )
    if mode not in MODES:
        raise ConfigError(f"OpenVINO mode must be latency or throughput, not {mode!r}")
    threads = int(threads or default_threads())
    p = Path(path).resolve()
    try:
        stat = p.stat()
    except OSError as exc:
        raise CheckpointError(f"{p} cannot be read ({exc})") from exc
    key = (str(p), stat.st_mtime_ns, stat.st_size, precision, threads, mode, batch)
    with _LOCK:  # one compilation per key, even when two server threads ask at once
        if key not in _COMPILED:
            _COMPILED[key] = _compile(p, precision, threads, mode, batch)
        return _COMPILED[key]


def _compile(path: Path, precision: str, threads: int, mode: str, batch: int | None) -> Any:
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = _core()
    if precision == "bf16" and not cpu_has_bf16():
        raise ConfigError("this CPU has no native bf16 (AVX512-BF16 or AMX): serve fp32 or int8")
    config: dict[Any, Any] = {
        props.inference_num_threads: threads,
        hints.performance_mode: hints.PerformanceMode.LATENCY
        if mode == "latency"
        else hints.PerformanceMode.THROUGHPUT,
        # One stream per request in latency mode: with two cores, two streams halve each.
        props.num_streams: 1 if mode == "latency" else props.streams.Num.AUTO,
    }
    config[hints.inference_precision] = HINTS[precision]
    where = cache_dir()
    if where is not None:
        config[props.cache_dir] = str(where)
    try:
        model = core.read_model(str(path))
        if batch is not None:
            shape = list(model.input(0).get_partial_shape())
            shape[0] = batch
            model.reshape({model.input(0).get_any_name(): shape})
        return core.compile_model(model, "CPU", config)
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
        lines = str(exc).strip().splitlines()
        raise CheckpointError(
            f"OpenVINO cannot compile {path} at {precision} ({lines[0] if lines else exc})"
        ) from exc


class OpenVinoRunner:
    """`runner(x)` -> logits for a float32 NCHW batch, on one compiled model per batch size seen.

    Batch sizes in `static` get a model compiled for that exact shape; any other size runs on
    the dynamic-batch model. One infer request per compiled model, guarded by a lock, so a
    runner may be shared by threads (each call still runs alone, as ORT's `run` does per thread
    pool).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        precision: str,
        *,
        threads: int | None = None,
        mode: str = "latency",
        static: tuple[int, ...] = (1,),
    ) -> None:
        self.path, self.precision, self.threads, self.mode = Path(path), precision, threads, mode
        self.static = tuple(static)
        self._requests: dict[int | None, tuple[Any, threading.Lock]] = {}
        self._lock = threading.Lock()
        self._request(None)  # compile now: a bad file or precision fails at load, not at predict

    def _request(self, batch: int | None) -> tuple[Any, threading.Lock]:
        with self._lock:
            if batch not in self._requests:
                compiled = compile_openvino(
                    self.path, self.precision, threads=self.threads, mode=self.mode, batch=batch
                )
                self._requests[batch] = (compiled.create_infer_request(), threading.Lock())
            return self._requests[batch]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        request, lock = self._request(len(x) if len(x) in self.static else None)
        with lock:
            request.infer({0: x})
            return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
