"""ONNX export with a dynamic batch axis, inference metadata, and the parity check.

Export path (torch 2.14): `torch.onnx.export(..., dynamo=True)`, the default since torch 2.9,
built on `torch.export`, with `dynamic_shapes` naming the batch dimension. The TorchScript path
(`dynamo=False`, `dynamic_axes`) still exists but is deprecated (it emits a DeprecationWarning
and, for ViTs, TracerWarnings); the dynamo path exports the timm CNNs and open_clip's ViT
cleanly, so it is the only one used. The example batch has 2 images, not 1: torch.export
specialises a dimension of size 1, which would pin the batch axis.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from food_assets.ml.artifacts import atomic_path
from food_assets.ml.errors import CheckpointError
from food_assets.ml.export.metadata import K_GRAPH_SHA, OnnxMetadata, graph_sha256, stamp
from food_assets.ml.models.bundle import ModelCard

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
PARITY_ATOL = 1e-4


def export_onnx(
    model: nn.Module,
    card: ModelCard,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    input_size: int | None = None,
) -> Path:
    """Export `model` to a self-contained ONNX file (weights inside) with a dynamic batch axis.

    The graph takes `input` `(batch, 3, S, S)` float32 (normalised as `card.preprocess` says)
    and returns `logits` `(batch, num_classes)`. `metadata_props` carry the class names, the
    preprocessing, the temperature, the model name and a hash of the graph (see
    `food_assets.ml.export.metadata`). The file is checked with `onnx.checker` and written
    atomically: a failed or interrupted export leaves `path` as it was.

    Args:
        model: the trained network; exported in eval mode, its mode restored afterwards.
        card: the model card (class names, preprocessing, temperature, name).
        path: output `.onnx` file.
        opset: ONNX opset; None takes the exporter's default (20 with torch 2.14).
        input_size: spatial size of the graph input; default `card.preprocess.input_size`.
            The preprocessing stored in the metadata is set to the same size.

    Raises:
        CheckpointError: the model cannot be exported (or the result fails the ONNX checker).
    """
    pre = card.preprocess.with_size(input_size)
    meta = OnnxMetadata(card.name, tuple(card.class_names), pre, float(card.temperature))
    proto = _export_proto(model, pre.input_size, opset=opset, name=card.name)
    _check_io(proto, card.num_classes, card.name)
    stamp(proto, meta, f"food_assets model {card.name} ({card.num_classes} classes)")
    return _check_and_save(proto, Path(path), card.name)


def _export_proto(model: nn.Module, size: int, *, opset: int | None, name: str) -> Any:
    """The dynamo exporter's ModelProto for `model` on `(batch, 3, size, size)` inputs; the
    model runs in eval mode and gets its mode back."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    example = torch.randn(2, 3, size, size, device=device)
    was_training = model.training
    model.eval()
    try:
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
            optimize=True,
            verbose=False,
        )
        return program.model_proto
    except Exception as exc:  # the exporter raises many types; all mean "this model won't export"
        root = exc
        while root.__cause__ is not None:  # the exporter wraps the real reason several times
            root = root.__cause__
        lines = str(root).strip().splitlines()
        raise CheckpointError(
            f"could not export model {name!r} to ONNX "
            f"({type(root).__name__}: {lines[0] if lines else ''}). "
            "If the model cannot be exported, set onnx=False in its registry entry."
        ) from exc
    finally:
        model.train(was_training)


def _check_and_save(proto: Any, path: Path, name: str) -> Path:
    """Run `onnx.checker`, then write the file atomically."""
    import onnx

    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise CheckpointError(f"the ONNX export of {name!r} fails the checker: {exc}") from exc
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return path


def _check_io(proto: Any, num_classes: int, name: str) -> None:
    out = proto.graph.output
    if len(out) != 1:
        raise CheckpointError(f"the ONNX export of {name!r} has {len(out)} outputs, not 1 (logits)")
    dims = out[0].type.tensor_type.shape.dim
    if len(dims) != 2 or (dims[1].HasField("dim_value") and dims[1].dim_value != num_classes):
        shape = [d.dim_value or d.dim_param for d in dims]
        raise CheckpointError(
            f"the ONNX export of {name!r} returns shape {shape}, not (batch, {num_classes})"
        )


def load_onnx(path: str | os.PathLike[str]) -> tuple[bytes, OnnxMetadata]:
    """Read an exported file and validate it: parses, metadata schema, graph hash, checker.

    Returns:
        The file's bytes (hand them to `create_session`, so the file is read once) and its
        metadata.

    Raises:
        CheckpointError: missing, corrupt, not ours, or altered since export.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path} does not exist; export the model first (materialize its onnx_<name> asset)"
        )
    data = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable ONNX file ({exc})") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    meta = OnnxMetadata.from_props(props, source=str(path))
    if graph_sha256(proto.graph) != props[K_GRAPH_SHA]:
        raise CheckpointError(
            f"{path}: the graph or weights changed after export (hash mismatch); the file is "
            "corrupt or was tampered with. Export the model again."
        )
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise CheckpointError(f"{path} fails the ONNX checker ({exc})") from exc
    _check_io(proto, len(meta.class_names), meta.model_name)
    return data, meta


def default_threads() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_spinning() -> bool:
    """Whether idle ONNX Runtime threads spin: as `OMP_WAIT_POLICY` says for torch's OpenMP
    threads (`food_assets` sets PASSIVE unless the user chose, ADR 0003), so both backends
    share the cores the same way. ORT's pip wheel has its own thread pool, not OpenMP: it
    ignores `OMP_WAIT_POLICY` and spins by default."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "ACTIVE"


def create_session(
    model: str | os.PathLike[str] | bytes,
    *,
    threads: int | None = None,
    providers: list[str] | None = None,
    spinning: bool | None = None,
) -> Any:
    """An ONNX Runtime session tuned for CPU inference: the one place sessions are built.

    Intra-op threads = available cores (ORT's default may count hyperthreads the container
    cannot use), one inter-op thread with sequential execution (a CNN is one chain of ops), all
    graph optimisations, and warnings off so a session does not print to the user's terminal.

    Args:
        model: a file path or the file's bytes.
        threads: intra-op threads; default `default_threads()`.
        providers: ORT execution providers; default CPU.
        spinning: whether idle worker threads busy-wait (`session.intra_op.allow_spinning`
            and the inter-op twin); default `default_spinning()`. Spinning shaves a little
            latency off back-to-back calls on cores nobody else needs, and takes those cores
            from every other process while it spins.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    spin = "1" if (default_spinning() if spinning is None else spinning) else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    src = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(src, opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        where = "the ONNX model" if isinstance(model, bytes) else str(model)
        raise CheckpointError(f"ONNX Runtime cannot load {where} ({exc})") from exc


def run_session(session: Any, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Logits for `(N, 3, H, W)` float32 inputs, run in batches."""
    name = session.get_inputs()[0].name
    x = np.ascontiguousarray(images, dtype=np.float32)
    outs = [
        session.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)


@dataclass(frozen=True)
class ParityReport:
    """ONNX Runtime vs eager PyTorch on the same inputs.

    Attributes:
        max_abs_diff: largest absolute logit difference.
        mean_abs_diff: mean absolute logit difference.
        top1_agreement: share of images whose top-1 class is the same.
        n_images: images compared.
        atol: tolerance on `max_abs_diff`.
        passed: `max_abs_diff <= atol` and every top-1 identical.
    """

    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    n_images: int
    atol: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_parity(
    onnx_path: str | os.PathLike[str],
    model: nn.Module,
    images: torch.Tensor,
    *,
    atol: float = PARITY_ATOL,
    batch_size: int = 32,
) -> ParityReport:
    """Compare the exported file with the eager model on `images` (normalised, export size).

    The file is run as it is on disk (its metadata is not validated here), so a damaged export
    shows up as a failed parity rather than a load error.
    """
    if len(images) == 0:
        raise ValueError("check_parity needs at least one image")
    was_training = model.training
    model.eval()
    # `with`, not the `@torch.no_grad()` decorator: mutmut skips decorated functions.
    try:
        with torch.no_grad():
            device = next(iter(model.parameters()), torch.empty(0)).device
            eager = torch.cat(
                [model(images[i : i + batch_size].to(device)).float().cpu()
                 for i in range(0, len(images), batch_size)]
            ).numpy()  # fmt: skip
    finally:
        model.train(was_training)
    session = create_session(onnx_path)
    ort_out = run_session(session, images.detach().cpu().numpy(), batch_size)
    if ort_out.shape != eager.shape:
        raise CheckpointError(
            f"{onnx_path} returns shape {ort_out.shape}, the model {eager.shape}: "
            "not the same model"
        )
    diff = np.abs(ort_out.astype(np.float64) - eager.astype(np.float64))
    max_diff = float(diff.max()) if np.isfinite(diff).all() else float("inf")
    agree = float((ort_out.argmax(1) == eager.argmax(1)).mean())
    return ParityReport(
        max_abs_diff=max_diff,
        mean_abs_diff=float(diff.mean()),
        top1_agreement=agree,
        n_images=len(images),
        atol=atol,
        passed=bool(max_diff <= atol and agree == 1.0),
    )
