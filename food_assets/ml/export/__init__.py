"""ONNX export (dynamic batch, inference metadata), int8 quantization with its accuracy gate,
ONNX Runtime parity and latency.

The `onnx_<name>` assets call `export_bundle` (export, parity, int8 and its gate, latency);
`onnx_parity` calls `check_bundle_parity`. int8: `food_assets.ml.export.quantize`.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so that `food_assets.ml.export.files` (the folder's file names, which
# `food_assets.layout` reads) imports without torch or ONNX.
_EXPORTS = {
    "ExportResult": "food_assets.ml.export.bundle_export",
    "check_bundle_parity": "food_assets.ml.export.bundle_export",
    "export_bundle": "food_assets.ml.export.bundle_export",
    "latency_ratio": "food_assets.ml.export.latency",
    "measure_latency": "food_assets.ml.export.latency",
    "OnnxMetadata": "food_assets.ml.export.metadata",
    "PARITY_ATOL": "food_assets.ml.export.onnx_export",
    "ParityReport": "food_assets.ml.export.onnx_export",
    "check_parity": "food_assets.ml.export.onnx_export",
    "create_session": "food_assets.ml.export.onnx_export",
    "export_onnx": "food_assets.ml.export.onnx_export",
    "load_onnx": "food_assets.ml.export.onnx_export",
    "run_session": "food_assets.ml.export.onnx_export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
