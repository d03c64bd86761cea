"""A hand-built ONNX classifier whose answers are easy to work out: logits = channel means @ W.

It carries the same metadata and graph hash as `export_onnx` writes, so `load_onnx`,
`OnnxPredictor` and `check_parity` accept it, but it takes milliseconds to build instead of a
torch.export run, which matters when `make mutation` runs a test once per mutant.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.export.metadata import K_GRAPH_SHA, OnnxMetadata, graph_sha256


def tiny_onnx(
    path: Path,
    weights: np.ndarray,
    *,
    class_names: tuple[str, ...],
    preprocess: Preprocess,
    temperature: float = 1.0,
    model_name: str = "tiny",
    precision: str = "fp32",
    int8: dict | None = None,
) -> Path:
    """Write `input (N, 3, S, S) -> logits (N, C) = mean over H, W of input @ weights`.

    `precision="int8"` with an `int8` record labels the (float) graph as an int8 export the
    way `quantize_onnx` does: what the serving rule reads is the metadata, not the ops."""
    c = weights.shape[1]
    s = preprocess.input_size
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, s, s])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", c])],
        [numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = OnnxMetadata(model_name, tuple(class_names), preprocess, temperature, precision, int8)
    props = meta.to_props()
    props[K_GRAPH_SHA] = graph_sha256(model.graph)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


class MeanLinear(nn.Module):
    """The eager twin of `tiny_onnx`: the same function in PyTorch."""

    def __init__(self, weights: np.ndarray) -> None:
        super().__init__()
        self.linear = nn.Linear(weights.shape[0], weights.shape[1], bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor(weights.T, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3)))
