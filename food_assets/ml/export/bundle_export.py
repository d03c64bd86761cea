"""`export_bundle`: a trained-model bundle in, a verified ONNX file (parity, latency) out.

This is the one function the `onnx_<name>` assets call: export with the evaluation's
temperature, check parity on real validation images reading the file as a user would, and
measure CPU latency. `check_bundle_parity` is also what the `onnx_parity` check runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from food_assets.ml.artifacts import write_json
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.data.transforms import ImagePipeline, Preprocess
from food_assets.ml.errors import CheckpointError

# The module, not its functions: callers (and tests) may substitute `onnx_export.export_onnx`.
from food_assets.ml.export import onnx_export
from food_assets.ml.export.latency import measure_latency
from food_assets.ml.export.onnx_export import PARITY_ATOL, ParityReport
from food_assets.ml.models.bundle import ModelCard, load_bundle

#: Timed calls per batch size (batch 32 takes 32x longer than batch 1, so fewer of them).
LATENCY_REPEATS: Mapping[int, int] = {1: 10, 32: 2}
#: Untimed calls per batch size before timing.
LATENCY_WARMUP: Mapping[int, int] = {1: 2, 32: 1}


@dataclass(frozen=True)
class ExportResult:
    """What `export_bundle` wrote and measured.

    Attributes:
        path: the `.onnx` file.
        card: the model card as exported (its temperature is the one embedded in the file).
        parity: ONNX Runtime against eager PyTorch on validation images.
        parity_path: the parity report as JSON.
        latency: `measure_latency` rows; None when latency was not measured.
        latency_path: those rows as JSON; None when latency was not measured.
    """

    path: Path
    card: ModelCard
    parity: ParityReport
    parity_path: Path
    latency: pd.DataFrame | None = None
    latency_path: Path | None = None


def parity_images(splits: SplitManifest, preprocess: Preprocess, n: int) -> torch.Tensor:
    """The first `n` validation images by path (test images when there is no val split), as a
    normalised batch at the model's input size."""
    frame = splits.frame("val")
    if frame.empty:
        frame = splits.frame("test")
    pipeline = ImagePipeline(preprocess)
    paths = frame.sort_values("path")["path"].head(n)
    return torch.stack([pipeline(p) for p in paths])


def check_bundle_parity(
    path: Path, bundle_dir: Path, splits: SplitManifest, n: int, atol: float = PARITY_ATOL
) -> ParityReport:
    """Load the file as a user would (metadata and graph hash validated), then compare it with
    the PyTorch model of the bundle on `n` real validation images.

    Raises:
        CheckpointError: the file or the bundle is unreadable, or their class names differ.
    """
    _, meta = onnx_export.load_onnx(path)  # a tampered or foreign file fails here, clearly
    model, card = load_bundle(bundle_dir)
    if list(meta.class_names) != list(card.class_names):
        raise CheckpointError(f"{path} holds other class names than the bundle {bundle_dir}")
    images = parity_images(splits, card.preprocess, n)
    return onnx_export.check_parity(path, model, images, atol=atol)


def export_bundle(
    bundle_dir: Path,
    splits: SplitManifest,
    path: Path,
    *,
    temperature: float,
    parity_path: Path,
    latency_path: Path | None = None,
    opset: int | None = None,
    n_parity: int = 32,
    atol: float = PARITY_ATOL,
    latency_repeats: Mapping[int, int] = LATENCY_REPEATS,
    latency_warmup: Mapping[int, int] = LATENCY_WARMUP,
    name: str | None = None,
) -> ExportResult:
    """Export the bundle to ONNX, check parity, and measure eager vs ONNX Runtime latency.

    Args:
        bundle_dir: a trained-model bundle (it stays as trained: nothing is written into it).
        splits: the split manifest whose val images the parity check runs on.
        path: the `.onnx` file to write (atomically).
        temperature: embedded in the file's metadata (the evaluation's calibration).
        parity_path: where the parity report goes (JSON).
        latency_path: where the latency rows go (JSON); None skips the measurement.
        opset: ONNX opset; None takes the exporter's default.
        n_parity: validation images for the parity check.
        atol: parity tolerance on the largest absolute logit difference.
        latency_repeats: timed calls per batch size; its keys are the batch sizes timed.
        latency_warmup: untimed calls per batch size first.
        name: the latency rows' `model` column; default the card's name.

    Raises:
        CheckpointError: unreadable bundle, a model that cannot be exported, or an export that
            cannot be read back. A parity mismatch is not an error: see `ExportResult.parity`.
    """
    net, card = load_bundle(bundle_dir)
    card = dataclasses.replace(card, temperature=temperature)
    onnx_export.export_onnx(net, card, path, opset=opset)
    parity = check_bundle_parity(path, bundle_dir, splits, n_parity, atol)
    parity_path = write_json(parity_path, parity.to_dict())
    latency = None
    if latency_path is not None:
        latency = measure_latency(
            net,
            path,
            card.preprocess.input_size,
            batch_sizes=tuple(latency_repeats),
            repeats=latency_repeats,
            warmup=latency_warmup,
            name=name or card.name,
        )
        latency_path = write_json(latency_path, latency.to_dict(orient="records"))
    return ExportResult(path, card, parity, parity_path, latency, latency_path)
