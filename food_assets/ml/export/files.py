"""Every file name inside an export folder (`onnx_<name>/`), owned here.

`food_assets.layout` builds its paths from these names; the exporter and the quantizer write
them. Nothing but constants and path arithmetic, so that importing it stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The fp32 export.
ONNX_FILE = "model.onnx"
#: The int8 twin of an export is named after it: `model.onnx` -> `model_int8.onnx`.
INT8_SUFFIX = "_int8"
#: The parity report, the latency rows and the int8 record (JSON), beside the exports.
PARITY_FILE = "parity.json"
LATENCY_FILE = "latency.json"
INT8_RECORD_FILE = "int8.json"


def int8_path(fp32_path: str | os.PathLike[str]) -> Path:
    """Where the int8 twin of an fp32 export lives: `model.onnx` -> `model_int8.onnx`."""
    p = Path(fp32_path)
    return p.with_name(f"{p.stem}{INT8_SUFFIX}{p.suffix}")


#: The int8 twin of `ONNX_FILE`.
ONNX_INT8_FILE = int8_path(ONNX_FILE).name
