"""ONNX export (dynamic batch, inference metadata), int8 quantization with its accuracy gate,
ONNX Runtime parity and latency.

The `onnx_<name>` assets call `export_bundle` (export, parity, int8 and its gate, latency);
`onnx_parity` calls `check_bundle_parity`. int8: `food_assets.ml.export.quantize`.
"""

from food_assets.ml.export.bundle_export import ExportResult, check_bundle_parity, export_bundle
from food_assets.ml.export.latency import latency_ratio, measure_latency
from food_assets.ml.export.metadata import OnnxMetadata
from food_assets.ml.export.onnx_export import (
    PARITY_ATOL,
    ParityReport,
    check_parity,
    create_session,
    export_onnx,
    load_onnx,
    run_session,
)

__all__ = [
    "PARITY_ATOL",
    "ExportResult",
    "OnnxMetadata",
    "ParityReport",
    "check_bundle_parity",
    "check_parity",
    "create_session",
    "export_bundle",
    "export_onnx",
    "latency_ratio",
    "load_onnx",
    "measure_latency",
    "run_session",
]
