"""What an exported ONNX file carries besides the graph, and the schema that guards it.

The ONNX file is self-contained for inference: `metadata_props` hold the class names, the
preprocessing, the calibration temperature and the model name, plus a SHA-256 of the graph so a
file whose weights were altered after export (bit rot, a bad copy, tampering) is refused at load
instead of giving quietly wrong answers.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import CheckpointError

METADATA_VERSION = 1
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
# metadata_props keys
K_VERSION = "food_assets.metadata_version"
K_MODEL = "food_assets.model_name"
K_CLASSES = "food_assets.class_names"
K_PREPROCESS = "food_assets.preprocess"
K_TEMPERATURE = "food_assets.temperature"
K_GRAPH_SHA = "food_assets.graph_sha256"
REQUIRED_KEYS = (K_VERSION, K_MODEL, K_CLASSES, K_PREPROCESS, K_TEMPERATURE, K_GRAPH_SHA)


@dataclass(frozen=True)
class OnnxMetadata:
    """The inference contract stored in an exported model."""

    model_name: str
    class_names: tuple[str, ...]
    preprocess: Preprocess
    temperature: float = 1.0

    def to_props(self) -> dict[str, str]:
        """`metadata_props` entries (all strings, as ONNX requires); the graph hash is added
        by the exporter."""
        return {
            K_VERSION: str(METADATA_VERSION),
            K_MODEL: self.model_name,
            K_CLASSES: json.dumps(list(self.class_names)),
            K_PREPROCESS: json.dumps(self.preprocess.to_dict(), sort_keys=True),
            K_TEMPERATURE: repr(float(self.temperature)),
        }

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
        return cls(name, tuple(names), pre, temperature)


def _json(text: str, bad: Any, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(f"{what} is not valid JSON ({exc.msg})") from None


def validate_preprocess(d: Any, bad: Any) -> Preprocess:
    """A `Preprocess` from untrusted JSON: exact fields, sane types and ranges."""
    fields = set(Preprocess.__dataclass_fields__)
    if not isinstance(d, dict) or set(d) != fields:
        raise bad(f"preprocess must be an object with exactly the fields {sorted(fields)}")
    size = d["input_size"]
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 4096:
        raise bad(f"preprocess.input_size must be an integer in [8, 4096] (got {size!r})")
    for key in ("mean", "std"):
        v = d[key]
        if (
            not isinstance(v, list | tuple)
            or len(v) != 3
            or not all(_is_num(x) and math.isfinite(x) for x in v)
        ):
            raise bad(f"preprocess.{key} must be a list of 3 numbers (got {v!r})")
    if not all(x > 0 for x in d["std"]):
        raise bad("preprocess.std must be positive")
    if d["interpolation"] not in INTERPOLATIONS:
        raise bad(f"preprocess.interpolation must be one of {INTERPOLATIONS}")
    crop = d["crop_pct"]
    if not _is_num(crop) or not 0.05 <= crop <= 2.0:
        raise bad(f"preprocess.crop_pct must be a number in [0.05, 2] (got {crop!r})")
    return Preprocess.from_dict(d)


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def graph_sha256(graph: Any) -> str:
    """SHA-256 of the serialized graph (nodes and initializers; metadata is not part of it)."""
    return hashlib.sha256(graph.SerializeToString(deterministic=True)).hexdigest()
