"""What the serving rule reads from an export: its (backend, precision) variants, each with
whether it may be served and its measured latency. The rule itself is `serving.decide_variant`.

An `onnx_<name>` folder holds `model.onnx` (fp32) and, when int8 is on, `model_int8.onnx`. The
int8 file carries its ONNX Runtime gate (`food_assets.ml.export.quantize`); the fp32 file
carries the variants record (`food_assets.ml.export.variants`): the OpenVINO variants' gates,
the graph each was gated on, and every variant's latency measured in one process at export.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from food_assets.ml.errors import CheckpointError
from food_assets.ml.inference.kinds import export_files, onnx_precision, read_props

#: Every (backend, precision) variant, in the order that breaks a latency tie: the portable
#: reference (ONNX Runtime fp32) first.
VARIANTS = (
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
)
REFERENCE = VARIANTS[0]
#: The batch size whose latency decides `auto`.
DECIDING_BATCH = 1


@dataclass(frozen=True)
class Candidate:
    """One (backend, precision) variant as the serving rule sees it.

    Attributes:
        backend, precision: the variant (`VARIANTS`).
        path: the file it runs (None when there is none).
        ok: it may be served (passed its gate, not stale, its runtime present here).
        why: why (not), one clause for a message.
        verdict: a few words for a table cell (`passed`, `failed its gate`, ...).
        ms: its median latency (ms per call) by batch size, measured with the others in one
            process; empty when not measured.
        relative: `ms` holds ratios to ONNX Runtime fp32 (an export from before the variants
            record kept only the int8 record's ratio), not milliseconds.
    """

    backend: str
    precision: str
    path: Path | None
    ok: bool
    why: str
    verdict: str
    ms: Mapping[int, float] = field(default_factory=dict)
    relative: bool = False

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.precision}"


def gate_verdict(gate: Any, what: str = "accuracy gate") -> tuple[bool, str, str]:
    if not isinstance(gate, Mapping):
        return False, f"it was never gated (no {what} in its record)", "never gated"
    if gate.get("passed") is not True:
        return False, f"it failed its {what} ({gate.get('description', 'no details')})", "failed"
    return True, f"passed its {what} ({gate.get('description', '')})", "passed"


def int8_verdict(record: Mapping[str, Any] | None, fp32_sha: str | None) -> tuple[bool, str, str]:
    """`int8_status` plus its verdict in a few words, for a table cell (`auto_label`)."""
    if not record:
        return False, "it carries no int8 record", "never gated"
    ok, why, verdict = gate_verdict(record.get("gate"))
    if not ok:
        return ok, why, "failed its gate" if verdict == "failed" else verdict
    if fp32_sha is not None and record.get("source_graph_sha256") != fp32_sha:
        why = "it was made from another fp32 export than the one beside it (stale)"
        return False, why, "stale"
    return True, why, "passed"


def int8_speedup(record: Mapping[str, Any] | None) -> float | None:
    """int8 / fp32 median latency at `DECIDING_BATCH`, as measured at export; None if not."""
    latency = (record or {}).get("latency") or {}
    row = (latency.get("by_batch") or {}).get(str(DECIDING_BATCH)) or {}
    ratio = row.get("int8_over_fp32")
    return float(ratio) if isinstance(ratio, int | float) and ratio > 0 else None


def split_exports(path: Path) -> tuple[Path | None, Path | None]:
    """(fp32 file, int8 file) for an `.onnx` file or a folder of exports, each file by the
    precision it records (`kinds`), the int8 twin by the name the exporter gives it."""
    from food_assets.ml.export.quantize import int8_path

    if path.is_dir():
        fp32, int8 = export_files(path)
        if len(fp32) > 1 or (not fp32 and len(int8) != 1):
            raise CheckpointError(
                f"{path} holds {len(fp32) + len(int8)} .onnx files; point at one of them "
                "(--from FILE)"
            )
        if fp32:
            twin = int8_path(fp32[0])
            return fp32[0], twin if twin.is_file() else None
        return None, int8[0]
    if onnx_precision(path) == "int8":
        return None, path
    twin = int8_path(path)
    return path, twin if twin.is_file() else None


@dataclass(frozen=True)
class ExportFacts:
    """What the serving rule reads from an export folder or file."""

    fp32: Path | None
    int8: Path | None
    int8_ok: bool
    int8_why: str
    int8_verdict: str  # a few words: "none", "passed", "failed its gate", "never gated", "stale"
    ratio: float | None
    candidates: tuple[Candidate, ...] = ()
    #: The fp32 file's variants record (`food_assets.ml.export.variants`); None before it.
    variants: Mapping[str, Any] | None = None

    @classmethod
    def read(cls, path: Path) -> ExportFacts:
        from food_assets.ml.export.metadata import K_GRAPH_SHA, OnnxMetadata

        fp32, int8 = split_exports(path)
        fp32_props = read_props(fp32) if fp32 is not None else {}
        int8_props = read_props(int8) if int8 is not None else {}
        record = OnnxMetadata.from_props(int8_props, source=str(int8)).int8 if int8 else None
        fp32_sha = fp32_props.get(K_GRAPH_SHA) if fp32 is not None and int8 else None
        if int8 is None:
            ok, why = False, "there is none (the export was made with int8 off, or before int8)"
            verdict = "none"
        else:
            ok, why, verdict = int8_verdict(record, fp32_sha)
        variants = variants_record(fp32_props, fp32)
        ratio = int8_speedup(record)
        latency = (variants or {}).get("latency_ms") or {}
        relative = variants is None  # only the int8 record's ratio to fp32 is known

        def ms(name: str, fallback: float | None) -> dict[int, float]:
            if variants is not None:
                got = latency.get(name) or {}
                return {int(b): float(v) for b, v in got.items() if isinstance(v, int | float)}
            return {DECIDING_BATCH: fallback} if fallback is not None and ratio else {}

        candidates = []
        if fp32 is not None:
            why_ref = "is the reference (fp32, parity with PyTorch checked at export)"
            ref_ms = ms("onnxruntime/fp32", 1.0)
            candidates.append(
                Candidate("onnxruntime", "fp32", fp32, True, why_ref, "reference", ref_ms, relative)
            )
        int8_ms = ms("onnxruntime/int8", ratio)
        candidates.append(
            Candidate("onnxruntime", "int8", int8, ok, why, verdict, int8_ms, relative)
        )
        shas = {"fp32": fp32_props.get(K_GRAPH_SHA), "int8": int8_props.get(K_GRAPH_SHA)}
        for backend, precision in VARIANTS[2:]:
            file = int8 if precision == "int8" else fp32
            v_ok, v_why, v_verdict = openvino_verdict(
                variants, precision, file, shas["int8" if precision == "int8" else "fp32"]
            )
            if precision == "int8" and v_ok and verdict == "stale":  # not from this fp32 file
                v_ok, v_why, v_verdict = False, why, verdict
            name = f"{backend}/{precision}"
            candidates.append(
                Candidate(backend, precision, file, v_ok, v_why, v_verdict, ms(name, None))
            )
        return cls(fp32, int8, ok, why, verdict, ratio, tuple(candidates), variants)


def variants_record(props: Mapping[str, str], fp32: Path | None) -> dict[str, Any] | None:
    """The variants record in an fp32 export's metadata, None when it has none (an export
    made before OpenVINO, or with it off); a record that is not a JSON object is an error."""
    import json

    from food_assets.ml.export.metadata import K_VARIANTS

    if K_VARIANTS not in props:
        return None
    try:
        record = json.loads(props[K_VARIANTS])
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("gates", {}), dict):
        raise CheckpointError(f"{fp32}: its variants record is not valid; export the model again")
    return record


def openvino_verdict(
    variants: Mapping[str, Any] | None, precision: str, file: Path | None, sha: str | None
) -> tuple[bool, str, str]:
    """(servable, why, verdict) for OpenVINO at `precision` on `file` (graph hash `sha`)."""
    if file is None:
        return False, f"there is no {precision} file to run", "none"
    entry = ((variants or {}).get("gates") or {}).get(f"openvino/{precision}")
    if entry is None:
        return False, "it was never gated (re-materialize onnx_<name> with openvino)", "never gated"
    if not entry.get("offered", True):
        return False, f"it was not offered at export ({entry.get('why', '')})", "not offered"
    ok, why, verdict = gate_verdict(entry.get("gate"))
    if not ok:
        return ok, why, "failed its gate" if verdict == "failed" else verdict
    if entry.get("graph_sha256") != sha:
        return False, "it was gated on another file than the one here (stale)", "stale"
    from food_assets.ml.export.openvino_runtime import cpu_has_bf16, openvino_status

    available, status = openvino_status()
    if not available:
        return False, status, "no openvino"
    if precision == "bf16" and not cpu_has_bf16():
        return False, "this CPU has no native bf16", "no bf16 here"
    return True, why, "passed"
