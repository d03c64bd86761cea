"""int8 ONNX exports: ONNX Runtime static quantization calibrated on real images, and the record
that decides whether one may be served.

`quantize_onnx` takes an fp32 export (`export_onnx`), runs `quant_pre_process` (shape inference
and graph optimisation) and then `quantize_static`: QDQ format, int8 weights per output channel,
activations calibrated on validation images through the model's own preprocessing (an
`ImageCalibrationReader`). The result keeps every metadata prop of the fp32 file (class names,
preprocessing, temperature: `load_onnx` and the predictors read it like any export), adds
`food_assets.precision = int8` and an `Int8Record` (`food_assets.int8`): how it was quantized,
the fp32 graph it came from, and, once `export_bundle` has them, its accuracy gate on the test
split and its measured latency. `int8_serving` reads that record: an int8 file that did not pass
its gate is never served.

ONNX Runtime's guidance (the `quantize_static` docstring) for x86 CPUs with VNNI (AMD Zen 4,
Intel Cascade Lake and later): QDQ, uint8 activations, int8 weights, `reduce_range` off; it is
the default here. `reduce_range=True` is for CPUs without VNNI.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from food_assets.ml.artifacts import atomic_path, scratch_dir
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.data.transforms import ImagePipeline, Preprocess
from food_assets.ml.errors import CheckpointError, ConfigError, DataSourceError
from food_assets.ml.export.files import INT8_SUFFIX as INT8_SUFFIX  # re-exported
from food_assets.ml.export.files import int8_path as int8_path  # re-exported
from food_assets.ml.export.metadata import K_GRAPH_SHA, OnnxMetadata, graph_sha256
from food_assets.ml.models.registry import setting
from food_assets.ml.quality import CheckOutcome, check_int8_gate

RECORD_VERSION = 1
_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


@dataclass(frozen=True)
class QuantizeConfig:
    """How `onnx_<name>` quantizes its export to int8 (ONNX Runtime static quantization)."""

    enabled: bool = setting(True, description="also write an int8 export next to the fp32 one")
    calibration_images: int = setting(
        128, description="val images (seeded sample) that calibrate the activation ranges"
    )
    method: Literal["minmax", "entropy", "percentile"] = setting(
        "minmax", description="activation calibration: minmax | entropy | percentile"
    )
    quant_format: Literal["qdq", "qoperator"] = setting(
        "qdq", description="qdq (QuantizeLinear/DequantizeLinear pairs) or qoperator (QLinear ops)"
    )
    per_channel: bool = setting(True, description="one weight scale per output channel")
    reduce_range: bool = setting(False, description="7-bit weights (CPUs without VNNI)")
    activations: Literal["uint8", "int8"] = setting(
        "uint8", description="activation type (uint8: ONNX Runtime's advice for x86 CPUs)"
    )
    exclude_depthwise: bool = setting(
        False, description="keep depthwise convolutions (group > 1) in fp32"
    )
    exclude_classifier: bool = setting(
        True, description="keep the layer that produces the logits in fp32"
    )
    gate_images: int = setting(
        1000, description="test images (seeded sample) the int8 accuracy gate compares on"
    )
    seed: int = setting(0, description="seed of the calibration and gate samples")

    def __post_init__(self) -> None:
        for name in ("calibration_images", "gate_images"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.method not in _METHODS:
            raise ConfigError(f"method must be one of {', '.join(_METHODS)} (got {self.method!r})")
        if self.quant_format not in ("qdq", "qoperator"):
            raise ConfigError(f"quant_format must be qdq or qoperator (got {self.quant_format!r})")
        if self.activations not in ("uint8", "int8"):
            raise ConfigError(f"activations must be uint8 or int8 (got {self.activations!r})")


# -- images -------------------------------------------------------------------------------------


def sample_split(splits: SplitManifest, split: str, n: int, seed: int = 0) -> Any:
    """Up to `n` rows of one split: all of them when it is that small, else a seeded sample
    (the first `n` by path would be the first classes alone on Food-101). Sorted by path."""
    frame = splits.frame(split)
    if len(frame) > n:
        frame = frame.sample(n=n, random_state=seed)
    return frame.sort_values("path").reset_index(drop=True)


def calibration_paths(splits: SplitManifest, n: int, seed: int = 0) -> list[str]:
    """Validation images to calibrate on (train images when there is no val split; never test,
    which the gate judges on)."""
    for split in ("val", "train"):
        frame = sample_split(splits, split, n, seed)
        if not frame.empty:
            return list(frame["path"])
    raise DataSourceError("no val or train images to calibrate the int8 export on")


def iter_batches(
    paths: Sequence[str], preprocess: Preprocess, batch_size: int = 32
) -> Iterator[np.ndarray]:
    """Decoded, preprocessed float32 batches `(B, 3, S, S)`, `batch_size` files at a time (a
    thousand 224 px images would be 600 MB at once)."""
    pipeline = ImagePipeline(preprocess)
    for i in range(0, len(paths), batch_size):
        chunk = [pipeline(p) for p in paths[i : i + batch_size]]
        yield torch.stack(chunk).numpy().astype(np.float32, copy=False)


class ImageCalibrationReader:
    """An ONNX Runtime `CalibrationDataReader` over image files (or ready-made batches): one
    `{input_name: batch}` per `get_next` call, None when done; `rewind` starts over.

    Not a subclass, so that importing this module does not import onnxruntime: ORT's abstract
    class accepts any object with a `get_next` method (its `__subclasshook__`)."""

    def __init__(
        self,
        input_name: str,
        *,
        paths: Sequence[str] = (),
        preprocess: Preprocess | None = None,
        batches: Sequence[np.ndarray] | None = None,
        batch_size: int = 16,
    ) -> None:
        if batches is None:
            if preprocess is None:
                raise ValueError("ImageCalibrationReader needs batches or paths with preprocess")
            batches = list(iter_batches(paths, preprocess, batch_size))
        if not batches or not sum(len(b) for b in batches):
            raise DataSourceError("no calibration images: the int8 export needs at least one")
        self.input_name = input_name
        self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
        self.n_images = sum(len(b) for b in self.batches)
        self._it = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = iter(self.batches)


def calibration_batch_size(config: QuantizeConfig) -> int:
    """Images per calibration batch: 1 for the histogram methods (entropy, percentile), whose
    ORT collectors stack every batch's outputs into one array and fail on a short last batch;
    16 for minmax, which only keeps running extremes."""
    return 16 if config.method == "minmax" else 1


# -- quantization -------------------------------------------------------------------------------


def output_nodes(proto: Any) -> list[str]:
    """Names of the nodes that produce a graph output (the classifier of an export).

    Quantizing it puts the logits themselves on a 256-step grid: on a trained sample FoodNet the
    largest logit error fell from 3.7 to 0.25 when it stayed fp32, for a negligible share of the
    MACs (ORT's docs advise keeping the most sensitive layers, often the first and last, in fp32).
    """
    outputs = {o.name for o in proto.graph.output}
    return [n.name for n in proto.graph.node if outputs & set(n.output)]


def depthwise_conv_nodes(proto: Any) -> list[str]:
    """Names of the Conv nodes with `group > 1` (depthwise and grouped convolutions)."""
    out = []
    for node in proto.graph.node:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if group > 1:
                out.append(node.name)
    return out


def quantize_onnx(
    fp32_path: str | os.PathLike[str],
    reader: ImageCalibrationReader,
    config: QuantizeConfig | None = None,
    *,
    calibration_split: str = "val",
) -> tuple[Any, dict[str, Any]]:
    """Quantize an fp32 export to int8 (static, calibrated by `reader`).

    Returns:
        The int8 `ModelProto`, stamped with the fp32 file's metadata plus `precision=int8` and
        the int8 record (no gate or latency yet: `stamp_int8` adds them), and that record.

    Raises:
        CheckpointError: the fp32 file is unreadable or ONNX Runtime cannot quantize it.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from food_assets.ml.export.metadata import stamp
    from food_assets.ml.export.onnx_export import load_onnx

    config = config or QuantizeConfig()
    _, meta = load_onnx(fp32_path)  # ours and intact, or a clear error
    source = onnx.load(str(fp32_path))
    work = scratch_dir("quantize-")
    excluded: list[str] = []
    try:
        pre, out = work / "pre.onnx", work / "int8.onnx"
        try:
            symbolic_shapes = _pre_process(quant_pre_process, fp32_path, pre)
            # Node names after pre-processing (its graph optimisation renames and fuses).
            prepared = onnx.load(str(pre))
            if config.exclude_depthwise:
                excluded += depthwise_conv_nodes(prepared)
            if config.exclude_classifier:
                excluded += output_nodes(prepared)
            quantize_static(
                str(pre),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ
                if config.quant_format == "qdq"
                else QuantFormat.QOperator,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                activation_type=QuantType.QUInt8
                if config.activations == "uint8"
                else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method=getattr(CalibrationMethod, _METHODS[config.method]),
            )
        except Exception as exc:  # ORT raises many types; all mean "this graph won't quantize"
            raise CheckpointError(
                f"ONNX Runtime could not quantize {fp32_path} to int8 ({type(exc).__name__}: "
                f"{exc}). Set enabled: false under the onnx_<name> asset's int8 config to "
                "export fp32 only."
            ) from exc
        proto = onnx.load(str(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = {
        "version": RECORD_VERSION,
        "source_graph_sha256": graph_sha256(source.graph),
        "quantization": {
            "tool": "onnxruntime.quantization.quantize_static",
            "symbolic_shape_inference": symbolic_shapes,
            "format": config.quant_format,
            "method": config.method,
            "per_channel": config.per_channel,
            "reduce_range": config.reduce_range,
            "weights": "int8",
            "activations": config.activations,
            "calibration_images": reader.n_images,
            "calibration_split": calibration_split,
            "excluded_nodes": len(excluded),
            "exclude_classifier": config.exclude_classifier,
            "exclude_depthwise": config.exclude_depthwise,
        },
        "gate": None,
        "latency": None,
    }
    int8_meta = dataclasses.replace(meta, precision="int8", int8=record)
    stamp(proto, int8_meta, f"food_assets model {meta.model_name}, int8 ({config.method})")
    return proto, record


def stamp_int8(proto: Any, record: dict[str, Any]) -> Any:
    """Replace the int8 record in `proto`'s metadata (the graph, and so its hash, unchanged)."""
    from food_assets.ml.export.metadata import stamp

    props = {p.key: p.value for p in proto.metadata_props}
    meta = OnnxMetadata.from_props(props, source="the int8 model")
    stamp(proto, dataclasses.replace(meta, int8=record), proto.doc_string)
    return proto


def save_int8(proto: Any, path: str | os.PathLike[str]) -> Path:
    """Check and write the int8 model atomically (a half-written int8 file is never seen)."""
    import onnx

    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise CheckpointError(f"the int8 model fails the ONNX checker: {exc}") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    if props.get(K_GRAPH_SHA) != graph_sha256(proto.graph):
        raise CheckpointError("the int8 model's graph hash does not match its graph")
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return Path(path)


# -- the accuracy gate --------------------------------------------------------------------------


def top1_predictions(
    sessions: Sequence[Any], paths: Sequence[str], preprocess: Preprocess, batch_size: int = 32
) -> list[np.ndarray]:
    """Top-1 class index per image, one array per session, decoding each batch once."""
    from food_assets.ml.export.onnx_export import run_session

    preds: list[list[np.ndarray]] = [[] for _ in sessions]
    for batch in iter_batches(paths, preprocess, batch_size):
        for out, session in zip(preds, sessions, strict=True):
            out.append(run_session(session, batch, batch_size).argmax(1))
    return [np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for p in preds]


def evaluate_int8_gate(
    fp32: str | os.PathLike[str] | bytes,
    int8: str | os.PathLike[str] | bytes,
    splits: SplitManifest,
    class_names: Sequence[str],
    preprocess: Preprocess,
    *,
    min_agreement: float,
    max_drop_points: float,
    n_images: int = 1000,
    seed: int = 0,
    threads: int | None = None,
) -> CheckOutcome:
    """The int8 accuracy gate on the test split (`check_int8_gate`): top-1 agreement with the
    fp32 export and the drop in top-1 accuracy, both exports run by ONNX Runtime on the same
    decoded images.

    Raises:
        DataSourceError: a test label the models do not know.
    """
    from food_assets.ml.export.onnx_export import create_session

    frame = sample_split(splits, "test", n_images, seed)
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted(set(frame["label"]) - set(index))
    if unknown:
        raise DataSourceError(
            f"test labels {unknown[:5]} are not among the model's classes: the splits and the "
            "model disagree; re-materialize the model on these splits"
        )
    labels = frame["label"].map(index).to_numpy(dtype=np.int64)
    sessions = [create_session(m, threads=threads) for m in (fp32, int8)]
    fp32_pred, int8_pred = top1_predictions(sessions, list(frame["path"]), preprocess)
    return check_int8_gate(
        fp32_pred,
        int8_pred,
        labels,
        min_agreement=min_agreement,
        max_drop_points=max_drop_points,
    )


def gate_record(outcome: CheckOutcome) -> dict[str, Any]:
    """The gate as the int8 record stores it."""
    return {"passed": bool(outcome.passed), "description": outcome.description, **outcome.metadata}


def _pre_process(quant_pre_process: Any, fp32_path: Path, out: Path) -> bool:
    """`quant_pre_process` with ONNX Runtime's symbolic shape inference, or without it where
    that inference cannot follow the graph (open_clip's ViT: its `Expand` of the class token
    defeats it, "object of type 'NoneType' has no len()"). The ORT docs allow skipping it at
    some cost in what gets quantized; the accuracy gate judges the result either way.

    Returns:
        Whether symbolic shape inference ran (recorded in the int8 record).
    """
    try:
        quant_pre_process(str(fp32_path), str(out))
        return True
    except TypeError:
        quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=True)
        return False
