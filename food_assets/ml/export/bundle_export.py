"""`export_bundle`: a trained-model bundle in, verified ONNX files (parity, int8 gate, latency)
out.

This is the one function the `onnx_<name>` assets call: export with the evaluation's
temperature, check parity on real validation images reading the file as a user would, quantize
to int8 (calibrated on validation images) and gate it on the test split, and measure eager, ONNX
Runtime fp32 and int8 CPU latency in one process. `check_bundle_parity` is also what the
`onnx_parity` check runs.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from food_assets.ml.artifacts import scratch_dir, write_json
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.data.transforms import ImagePipeline, Preprocess
from food_assets.ml.errors import CheckpointError

# The module, not its functions: callers (and tests) may substitute `onnx_export.export_onnx`.
from food_assets.ml.export import files, onnx_export, quantize, variants
from food_assets.ml.export.latency import ORT_FP32, ORT_INT8, ROW_NAMES, measure_latency, median_ms
from food_assets.ml.export.onnx_export import PARITY_ATOL, ParityReport
from food_assets.ml.export.openvino_runtime import openvino_status
from food_assets.ml.export.quantize import QuantizeConfig
from food_assets.ml.models.bundle import ModelCard, load_bundle
from food_assets.ml.quality import CheckOutcome

#: The int8 gate's defaults (`QualityGates.int8_min_agreement` / `int8_max_drop_points`).
INT8_MIN_AGREEMENT = 0.99
INT8_MAX_DROP_POINTS = 0.5

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
        int8_path: the int8 export; None when int8 is off.
        int8: its record (quantization, gate, latency; `quantize_onnx`), as in its metadata.
        int8_gate: the int8 accuracy gate's outcome; None when int8 is off.
    """

    path: Path
    card: ModelCard
    parity: ParityReport
    parity_path: Path
    latency: pd.DataFrame | None = None
    latency_path: Path | None = None
    int8_path: Path | None = None
    int8: dict | None = None
    int8_gate: CheckOutcome | None = None


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
    out_dir: Path,
    *,
    temperature: float,
    measure_latency: bool = True,
    opset: int | None = None,
    n_parity: int = 32,
    atol: float = PARITY_ATOL,
    latency_repeats: Mapping[int, int] = LATENCY_REPEATS,
    latency_warmup: Mapping[int, int] = LATENCY_WARMUP,
    name: str | None = None,
    int8: QuantizeConfig | None = None,
    int8_min_agreement: float = INT8_MIN_AGREEMENT,
    int8_max_drop_points: float = INT8_MAX_DROP_POINTS,
    openvino: bool = True,
    variant_gates: Mapping[str, tuple[float, float]] | None = None,
) -> ExportResult:
    """Export the bundle to ONNX, check parity, quantize to int8 and gate it, and measure eager
    vs ONNX Runtime (fp32, int8) latency.

    Args:
        bundle_dir: a trained-model bundle (it stays as trained: nothing is written into it).
        splits: the split manifest: parity and calibration run on val, the int8 gate on test.
        out_dir: the export folder; its files are named by `ml/export/files.py`: the `.onnx`
            file (written atomically), its int8 twin, the parity report, the latency rows and
            the int8 record.
        temperature: embedded in the file's metadata (the evaluation's calibration).
        measure_latency: False skips the measurement (then an int8 export is never "measured
            faster", so precision `auto` serves fp32).
        opset: ONNX opset; None takes the exporter's default.
        n_parity: validation images for the parity check.
        atol: parity tolerance on the largest absolute logit difference.
        latency_repeats: timed calls per batch size; its keys are the batch sizes timed.
        latency_warmup: untimed calls per batch size first.
        name: the latency rows' `model` column; default the card's name.
        int8: how to quantize; None or `enabled=False` writes no int8 file (and removes a stale
            one from an earlier export, so it can never be served next to a newer fp32 file).
        int8_min_agreement, int8_max_drop_points: the int8 gate (`check_int8_gate`); OpenVINO
            on the int8 file gets the same.
        openvino: also gate and time the OpenVINO variants (fp32, bf16, int8) and record them
            in the fp32 file (`ml/export/variants.py`); skipped, and said so in the record,
            where openvino is not installed.
        variant_gates: (min agreement, max drop) per OpenVINO precision; default
            `variants.DEFAULT_GATES`.

    Raises:
        CheckpointError: unreadable bundle, a model that cannot be exported or quantized, or an
            export that cannot be read back. A parity mismatch or a failed int8 gate is not an
            error: see `ExportResult.parity` and `ExportResult.int8_gate`.
    """
    path = Path(out_dir) / files.ONNX_FILE
    parity_path = path.with_name(files.PARITY_FILE)
    latency_path = path.with_name(files.LATENCY_FILE) if measure_latency else None
    int8_record_path = path.with_name(files.INT8_RECORD_FILE)
    net, card = load_bundle(bundle_dir)
    card = dataclasses.replace(card, temperature=temperature)
    onnx_export.export_onnx(net, card, path, opset=opset)
    parity = check_bundle_parity(path, bundle_dir, splits, n_parity, atol)
    parity_path = write_json(parity_path, parity.to_dict())
    target = quantize.int8_path(path)
    proto = record = gate = None
    if int8 is not None and int8.enabled:
        proto, record, gate = _quantize_and_gate(
            path, card, splits, int8, int8_min_agreement, int8_max_drop_points
        )
    else:  # a stale int8 file must not outlive the fp32 export it was made from
        for stale in (target, int8_record_path):
            stale.unlink(missing_ok=True)
    work = scratch_dir("variants-")
    try:
        ov_variants, ov_gates = [], {}
        if openvino and openvino_status()[0]:
            ov_variants, ov_gates = _gate_openvino(
                path, proto, work, card, splits, int8, variant_gates,
                (int8_min_agreement, int8_max_drop_points),
            )  # fmt: skip
        latency = _measure(net, path, proto, ov_variants, card, latency_path, latency_repeats,
                           latency_warmup, name)  # fmt: skip
        if ov_variants:
            rows = latency if latency is not None else pd.DataFrame()
            timed = {
                variant: {int(b): ms for b in (1, 32) if (ms := median_ms(rows, row, b))}
                for variant, row in ROW_NAMES.items()
            }
            threads = int(rows["threads"].iloc[0]) if len(rows) else None
            ov_record = variants.variants_record(ov_variants, ov_gates, timed, threads=threads)
            variants.stamp_variants(path, ov_record)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    int8_file = None
    if proto is not None and record is not None:
        record = {**record, "gate": quantize.gate_record(gate), "latency": _int8_latency(latency)}
        int8_file = quantize.save_int8(quantize.stamp_int8(proto, record), target)
        size_mb = round(int8_file.stat().st_size / 2**20, 3)
        write_json(int8_record_path, {**record, "size_mb": size_mb})
    return ExportResult(
        path, card, parity, parity_path, latency, latency_path, int8_file, record, gate
    )


def _measure(net, path, proto, ov_variants, card, latency_path, repeats, warmup, name):
    """Eager, ONNX Runtime fp32 / int8 and every offered OpenVINO variant, timed together."""
    latency = None
    if latency_path is not None:
        sources: dict[str, Any] = {ORT_FP32: path}
        if proto is not None:
            sources[ORT_INT8] = proto.SerializeToString()
        for v in ov_variants:
            if v.run is not None:
                sources[ROW_NAMES[v.name]] = v.run
        latency = measure_latency(
            net,
            sources,
            card.preprocess.input_size,
            batch_sizes=tuple(repeats),
            repeats=repeats,
            warmup=warmup,
            name=name or card.name,
        )
        latency_path = write_json(latency_path, latency.to_dict(orient="records"))
    return latency


def _gate_openvino(path, proto, work, card, splits, int8, variant_gates, int8_gate):
    """The OpenVINO variants (the int8 one on a scratch copy of the int8 model, whose graph is
    the one the int8 file will hold) and their gates against ONNX Runtime fp32."""
    import onnx

    from food_assets.ml.export.metadata import graph_sha256

    shas = {"fp32": _graph_sha(path)}
    int8_scratch = None
    if proto is not None:
        int8_scratch = work / "int8.onnx"
        onnx.save_model(proto, str(int8_scratch))
        shas["int8"] = graph_sha256(proto.graph)
    found = variants.openvino_variants(path, int8_scratch, shas)
    thresholds = {**variants.DEFAULT_GATES, **(variant_gates or {}), "int8": int8_gate}
    runners = {v.name: v.run for v in found if v.run is not None}
    config = int8 or QuantizeConfig()
    gates = variants.evaluate_variant_gates(
        path, runners, splits, card.class_names, card.preprocess,
        thresholds={f"openvino/{p}": t for p, t in thresholds.items()},
        n_images=config.gate_images, seed=config.seed,
    )  # fmt: skip
    return found, gates


def _graph_sha(path: Path) -> str:
    import onnx

    from food_assets.ml.export.metadata import K_GRAPH_SHA

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return props[K_GRAPH_SHA]


def _quantize_and_gate(
    path: Path,
    card: ModelCard,
    splits: SplitManifest,
    config: QuantizeConfig,
    min_agreement: float,
    max_drop_points: float,
) -> tuple[object, dict, CheckOutcome]:
    """The int8 model (in memory: nothing is written before it has its gate), its record and
    its gate's outcome."""
    paths = quantize.calibration_paths(splits, config.calibration_images, config.seed)
    reader = quantize.ImageCalibrationReader(
        onnx_export.INPUT_NAME,
        paths=paths,
        preprocess=card.preprocess,
        batch_size=quantize.calibration_batch_size(config),
    )
    split = "val" if not splits.frame("val").empty else "train"
    proto, record = quantize.quantize_onnx(path, reader, config, calibration_split=split)
    gate = quantize.evaluate_int8_gate(
        path,
        proto.SerializeToString(),
        splits,
        card.class_names,
        card.preprocess,
        min_agreement=min_agreement,
        max_drop_points=max_drop_points,
        n_images=config.gate_images,
        seed=config.seed,
    )
    return proto, record, gate


def _int8_latency(latency: pd.DataFrame | None) -> dict | None:
    """ORT fp32 and int8 medians per batch size, as the int8 record keeps them."""
    if latency is None or latency.empty:
        return None
    out: dict = {"threads": int(latency["threads"].iloc[0]), "by_batch": {}}
    for batch in sorted(set(latency["batch"])):
        fp32, q = median_ms(latency, ORT_FP32, batch), median_ms(latency, ORT_INT8, batch)
        if fp32 is not None and q is not None:
            out["by_batch"][str(int(batch))] = {
                "fp32_ms": fp32,
                "int8_ms": q,
                "int8_over_fp32": q / fp32,
            }
    return out
