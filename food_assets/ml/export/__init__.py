"""ONNX export (dynamic batch, inference metadata), int8 quantization with its accuracy gate,
ONNX Runtime parity and latency.

The `onnx_<name>` assets call `export_bundle` (export, parity, int8 and its gate, latency);
`onnx_parity` calls `check_bundle_parity`. int8: `food_assets.ml.export.quantize`.
"""

from __future__ import annotations

import lazy_loader

# Loaded on first use, so that `food_assets.ml.export.files` (the folder's file names, which
# `food_assets.layout` reads) imports without torch or ONNX.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "bundle_export": ["ExportResult", "check_bundle_parity", "export_bundle"],
        "latency": ["latency_ratio", "measure_latency"],
        "metadata": ["OnnxMetadata"],
        "onnx_export": [
            "PARITY_ATOL",
            "ParityReport",
            "check_parity",
            "create_session",
            "export_onnx",
            "load_onnx",
            "run_session",
        ],
    },
)
