"""The OpenVINO variants of an export: gated against the fp32 reference on the test split, timed
with every other variant in one process, and recorded in the fp32 file (ADR 0021).

`export_bundle` calls `gate_openvino_variants` after the int8 file is made (in memory) and
before latency is measured; `variants_record` builds the record the serving rule reads
(`food_assets.ml.inference.variants`) and `stamp_variants` writes it into the fp32 file's
metadata (`food_assets.variants`; the graph, and so its hash, unchanged). A variant is served
only when its gate passed on the very file it runs (`graph_sha256`).

Gates per precision (top-1 agreement with ONNX Runtime fp32, accuracy drop in points):
`fp32` must agree like a second fp32 runtime does; `bf16` has 8 mantissa bits, so its own,
looser agreement; `int8` the int8 gate `onnx_<name>` already uses (`QualityGates`).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from food_assets.ml.artifacts import atomic_path
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import DataSourceError
from food_assets.ml.export.metadata import K_GRAPH_SHA, K_VARIANTS
from food_assets.ml.quality import CheckOutcome, check_int8_gate

RECORD_VERSION = 1
#: (min top-1 agreement, max accuracy drop in points) per OpenVINO precision; int8's default
#: is replaced by the int8 gate's thresholds in `export_bundle`.
DEFAULT_GATES: dict[str, tuple[float, float]] = {
    "fp32": (0.995, 0.25),
    "bf16": (0.98, 0.5),
    "int8": (0.99, 0.5),
}
VARIANTS_JSON = "variants.json"


@dataclass(frozen=True)
class OpenVinoVariant:
    """One OpenVINO variant to gate: its runner, the file it runs and why it may be absent."""

    precision: str
    file: Path | None
    graph_sha256: str | None
    run: Callable[[np.ndarray], np.ndarray] | None
    why_not: str = ""

    @property
    def name(self) -> str:
        return f"openvino/{self.precision}"


def cpu_description() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux), for the record: a latency belongs to
    the machine that measured it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def openvino_variants(
    fp32_path: Path, int8_path: Path | None, graph_shas: Mapping[str, str | None], **runner_kwargs
) -> list[OpenVinoVariant]:
    """The OpenVINO variants this machine can gate: fp32 and bf16 on the fp32 file (bf16 only
    where the CPU computes it natively), int8 on the int8 file (when there is one). Compiling
    one here is what fails first when OpenVINO cannot run a file: that is recorded, not raised.
    """
    from food_assets.ml.errors import FoodAssetsError
    from food_assets.ml.export.openvino_runtime import OpenVinoRunner, cpu_has_bf16

    out = []
    for precision in ("fp32", "bf16", "int8"):
        file = int8_path if precision == "int8" else fp32_path
        sha = graph_shas.get("int8" if precision == "int8" else "fp32")
        if file is None:
            out.append(OpenVinoVariant(precision, None, None, None, "no int8 file"))
            continue
        if precision == "bf16" and not cpu_has_bf16():
            out.append(OpenVinoVariant(precision, file, sha, None, "this CPU has no native bf16"))
            continue
        try:
            run = OpenVinoRunner(file, precision, static=(1, 32), **runner_kwargs)
        except FoodAssetsError as exc:
            out.append(OpenVinoVariant(precision, file, sha, None, str(exc)))
            continue
        out.append(OpenVinoVariant(precision, file, sha, run))
    return out


def evaluate_variant_gates(
    reference: str | os.PathLike[str] | bytes,
    runners: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    splits: SplitManifest,
    class_names: Sequence[str],
    preprocess: Preprocess,
    *,
    thresholds: Mapping[str, tuple[float, float]],
    n_images: int = 1000,
    seed: int = 0,
) -> dict[str, CheckOutcome]:
    """Each runner's gate against ONNX Runtime on the fp32 `reference`, on the same decoded
    test images (a seeded sample of at most `n_images`; each batch decoded once for all).

    Args:
        runners: variant name (`openvino/bf16`) -> callable (float32 NCHW batch -> logits).
        thresholds: variant name -> (min top-1 agreement, max accuracy drop in points).

    Raises:
        DataSourceError: a test label the model does not know.
    """
    from food_assets.ml.export.onnx_export import create_session, run_session
    from food_assets.ml.export.quantize import iter_batches, sample_split

    frame = sample_split(splits, "test", n_images, seed)
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted(set(frame["label"]) - set(index))
    if unknown:
        raise DataSourceError(
            f"test labels {unknown[:5]} are not among the model's classes: the splits and the "
            "model disagree; re-materialize the model on these splits"
        )
    labels = frame["label"].map(index).to_numpy(dtype=np.int64)
    session = create_session(reference)
    ref: list[np.ndarray] = []
    preds: dict[str, list[np.ndarray]] = {name: [] for name in runners}
    for batch in iter_batches(list(frame["path"]), preprocess, 32):
        ref.append(run_session(session, batch, 32).argmax(1))
        for name, run in runners.items():
            preds[name].append(np.asarray(run(batch)).argmax(1))
    empty = np.zeros(0, dtype=np.int64)
    ref_pred = np.concatenate(ref) if ref else empty
    out = {}
    for name in runners:
        got = np.concatenate(preds[name]) if preds[name] else empty
        agreement, drop = thresholds[name]
        out[name] = check_int8_gate(
            ref_pred,
            got,
            labels,
            min_agreement=agreement,
            max_drop_points=drop,
            variant=name,
        )
    return out


def variants_record(
    variants: Sequence[OpenVinoVariant],
    gates: Mapping[str, CheckOutcome],
    latency_ms: Mapping[str, Mapping[int, float]],
    *,
    threads: int | None,
) -> dict[str, Any]:
    """The record stamped into the fp32 file and written to `variants.json`: each OpenVINO
    variant's gate (or why it was not offered) and the file it was gated on, and the latency of
    every variant (ONNX Runtime too) as measured together at export."""
    from food_assets.ml.export.openvino_runtime import HINTS, openvino_status
    from food_assets.ml.export.quantize import gate_record

    entries: dict[str, Any] = {}
    for v in variants:
        entry: dict[str, Any] = {"offered": v.run is not None, "hint": HINTS[v.precision]}
        if v.run is None:
            entry["why"] = v.why_not
        else:
            entry["graph_sha256"] = v.graph_sha256
            gate = gates.get(v.name)
            entry["gate"] = gate_record(gate) if gate is not None else None
        entries[v.name] = entry
    return {
        "version": RECORD_VERSION,
        "cpu": cpu_description(),
        "runtime": openvino_status()[1],
        "threads": threads,
        "gates": entries,
        "latency_ms": {
            name: {str(b): float(ms) for b, ms in by_batch.items()}
            for name, by_batch in latency_ms.items()
        },
    }


def stamp_variants(fp32_path: Path, record: Mapping[str, Any]) -> Path:
    """Write `record` into the fp32 file's metadata (atomically; the graph is unchanged, so
    `load_onnx`'s hash check and every gate's `graph_sha256` still hold) and beside it as
    `variants.json`."""
    import onnx

    from food_assets.ml.artifacts import write_json

    proto = onnx.load(str(fp32_path))
    kept = [p for p in proto.metadata_props if p.key != K_VARIANTS]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = K_VARIANTS, json.dumps(record, sort_keys=True)
    assert {p.key for p in proto.metadata_props} >= {K_GRAPH_SHA}
    with atomic_path(fp32_path) as tmp:
        onnx.save_model(proto, str(tmp))
    write_json(fp32_path.parent / VARIANTS_JSON, dict(record))
    return fp32_path
