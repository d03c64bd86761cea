"""What an exported ONNX file carries besides the graph, and the schema that guards it.

The ONNX file is self-contained for inference: `metadata_props` hold the class names, the
preprocessing, the calibration temperature and the model name, plus a SHA-256 of the graph so a
file whose weights were altered after export (bit rot, a bad copy, tampering) is refused at load
instead of giving quietly wrong answers.

Direction of imports: `ml.export` imports `ml.models` (it exports models; `onnx_export` reads the
`ModelCard`), never the reverse. The preprocess schema both sides check lives with `Preprocess`
(`ml/data/transforms.py`: `validate_preprocess`, re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from food_assets.ml.data.transforms import INTERPOLATIONS as INTERPOLATIONS  # re-exported
from food_assets.ml.data.transforms import Preprocess, validate_preprocess
from food_assets.ml.errors import CheckpointError

METADATA_VERSION = 1
# metadata_props keys
K_VERSION = "food_assets.metadata_version"
K_MODEL = "food_assets.model_name"
K_CLASSES = "food_assets.class_names"
K_PREPROCESS = "food_assets.preprocess"
K_TEMPERATURE = "food_assets.temperature"
K_GRAPH_SHA = "food_assets.graph_sha256"
REQUIRED_KEYS = (K_VERSION, K_MODEL, K_CLASSES, K_PREPROCESS, K_TEMPERATURE, K_GRAPH_SHA)
# Optional keys (a file without them is an fp32 export, as every export was before int8)
K_PRECISION = "food_assets.precision"
K_INT8 = "food_assets.int8"
#: fp32 files only: the variants record (OpenVINO gates, every variant's latency; ADR 0021).
#: Not part of `OnnxMetadata`: the serving rule reads it (`ml/inference/variants.py`).
K_VARIANTS = "food_assets.variants"
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class OnnxMetadata:
    """The inference contract stored in an exported model."""

    model_name: str
    class_names: tuple[str, ...]
    preprocess: Preprocess
    temperature: float = 1.0
    #: `fp32` (an `export_onnx` file) or `int8` (`quantize_onnx`'s).
    precision: str = "fp32"
    #: int8 only: how it was quantized, the fp32 graph it came from, its accuracy gate and
    #: measured latency (`food_assets.ml.export.quantize.Int8Record.to_dict`).
    int8: dict[str, Any] | None = None

    def to_props(self) -> dict[str, str]:
        """`metadata_props` entries (all strings, as ONNX requires); the graph hash is added
        by the exporter."""
        props = {
            K_VERSION: str(METADATA_VERSION),
            K_MODEL: self.model_name,
            K_CLASSES: json.dumps(list(self.class_names)),
            K_PREPROCESS: json.dumps(self.preprocess.to_dict(), sort_keys=True),
            K_TEMPERATURE: repr(float(self.temperature)),
            K_PRECISION: self.precision,
        }
        if self.int8 is not None:
            props[K_INT8] = json.dumps(self.int8, sort_keys=True)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], *, source: str = "the ONNX file") -> OnnxMetadata:
        """Validate and parse `metadata_props`; anything off is a `CheckpointError`."""

        def bad(what: str) -> CheckpointError:
            return CheckpointError(
                f"{source}: {what}. The file was not written by `export_onnx` or was altered "
                "since; export the model again (materialize its onnx_<name> asset)."
            )

        missing = [k for k in REQUIRED_KEYS if k not in props]
        if missing:
            raise bad(f"metadata lacks {missing}")
        if props[K_VERSION] != str(METADATA_VERSION):
            raise bad(f"unsupported metadata version {props[K_VERSION]!r}")
        name = props[K_MODEL]
        if not name.strip():
            raise bad("model name is empty")
        names = _json(props[K_CLASSES], bad, "class_names")
        if not isinstance(names, list) or not names or not all(isinstance(c, str) for c in names):
            raise bad("class_names must be a non-empty JSON list of strings")
        if len(set(names)) != len(names):
            raise bad("class_names has duplicates")
        pre = validate_preprocess(_json(props[K_PREPROCESS], bad, "preprocess"), bad)
        try:
            temperature = float(props[K_TEMPERATURE])
        except ValueError:
            raise bad(f"temperature {props[K_TEMPERATURE]!r} is not a number") from None
        if not (math.isfinite(temperature) and temperature > 0):
            raise bad(f"temperature must be a positive number (got {temperature})")
        precision = props.get(K_PRECISION, "fp32")
        if precision not in PRECISIONS:
            raise bad(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        int8 = _json(props[K_INT8], bad, "int8") if K_INT8 in props else None
        if (int8 is None) != (precision == "fp32") or not isinstance(int8, dict | None):
            raise bad("an int8 file carries its int8 record (a JSON object), an fp32 file none")
        return cls(name, tuple(names), pre, temperature, precision, int8)


def _json(text: str, bad: Any, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(f"{what} is not valid JSON ({exc.msg})") from None


def graph_sha256(graph: Any) -> str:
    """SHA-256 of the serialized graph (nodes and initializers; metadata is not part of it)."""
    return hashlib.sha256(graph.SerializeToString(deterministic=True)).hexdigest()


def stamp(proto: Any, meta: OnnxMetadata, doc: str) -> None:
    """Write our metadata props (replacing any the exporter set under the same keys), the
    graph hash, the producer name and the doc string into `proto`: the fp32 exporter and the
    int8 quantizer both stamp through here."""
    props = meta.to_props()
    props[K_GRAPH_SHA] = graph_sha256(proto.graph)
    kept = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "food_assets"
    proto.doc_string = doc
