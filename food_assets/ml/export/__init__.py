"""ONNX export (dynamic batch, inference metadata), ONNX Runtime parity and latency."""

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
    "OnnxMetadata",
    "ParityReport",
    "check_parity",
    "create_session",
    "export_onnx",
    "latency_ratio",
    "load_onnx",
    "measure_latency",
    "run_session",
]
