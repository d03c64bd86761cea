"""Which export answers: fp32 or int8, by the rule `predict`, the demo and the leaderboard share.

An `onnx_<name>` folder holds the fp32 export (`model.onnx`) and, when int8 is on, its int8 twin
(`model_int8.onnx`, `food_assets.ml.export.quantize`). The int8 file carries its own record:
the fp32 graph it was made from, its accuracy gate on the test split and its measured latency.

- `fp32`: the fp32 export.
- `int8`: the int8 export, only if it passed its gate and was made from the fp32 file beside it;
  anything else is a `ConfigError` that says why and what to do.
- `auto` (the default): int8 when it exists, passed its gate and was measured faster than fp32
  at batch 1 (one image: the demo's case, and the latency a user waits for); fp32 otherwise.

A failed (or never gated) int8 file is never served, whatever the request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from food_assets.ml.errors import CheckpointError, ConfigError
from food_assets.ml.inference.kinds import export_files, onnx_precision, read_props

PRECISIONS = ("auto", "fp32", "int8")
#: The batch size whose latency decides `auto`.
DECIDING_BATCH = 1


@dataclass(frozen=True)
class ExportChoice:
    """The export to load, and why.

    Attributes:
        path: the `.onnx` file.
        precision: `fp32` or `int8`.
        reason: one line for the user (`predict` prints it, the demo shows it).
    """

    path: Path
    precision: str
    reason: str


def check_precision(precision: str) -> str:
    """`precision` if it is one of `PRECISIONS`, else a `ConfigError` naming them."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r} (auto: int8 "
            "when it passed its accuracy gate and was measured faster, else fp32)"
        )
    return precision


def int8_status(record: Mapping[str, Any] | None, fp32_sha: str | None) -> tuple[bool, str]:
    """(servable, why) for an int8 record (`OnnxMetadata.int8`) next to an fp32 export whose
    graph hash is `fp32_sha` (None: no fp32 file to compare with)."""
    ok, why, _ = _int8_verdict(record, fp32_sha)
    return ok, why


def _int8_verdict(record: Mapping[str, Any] | None, fp32_sha: str | None) -> tuple[bool, str, str]:
    """`int8_status` plus its verdict in a few words, for a table cell (`auto_label`)."""
    if not record:
        return False, "it carries no int8 record", "never gated"
    gate = record.get("gate")
    if not isinstance(gate, Mapping):
        return False, "it was never gated (no accuracy gate in its record)", "never gated"
    if gate.get("passed") is not True:
        why = f"it failed its accuracy gate ({gate.get('description', 'no details')})"
        return False, why, "failed its gate"
    if fp32_sha is not None and record.get("source_graph_sha256") != fp32_sha:
        why = "it was made from another fp32 export than the one beside it (stale)"
        return False, why, "stale"
    return True, f"passed its accuracy gate ({gate.get('description', '')})", "passed"


def int8_speedup(record: Mapping[str, Any] | None) -> float | None:
    """int8 / fp32 median latency at `DECIDING_BATCH`, as measured at export; None if not."""
    latency = (record or {}).get("latency") or {}
    row = (latency.get("by_batch") or {}).get(str(DECIDING_BATCH)) or {}
    ratio = row.get("int8_over_fp32")
    return float(ratio) if isinstance(ratio, int | float) and ratio > 0 else None


def decide(
    precision: str, *, has_fp32: bool, int8_ok: bool, int8_why: str, ratio: float | None
) -> tuple[str, str]:
    """The serving rule on facts already read: (`fp32` | `int8`, reason). Pure.

    Raises:
        ConfigError: the requested precision cannot be served.
    """
    check_precision(precision)
    fix = "re-materialize onnx_<name> (int8 is on by default)"
    if precision == "fp32":
        if not has_fp32:
            raise ConfigError(f"there is no fp32 export here; {fix}, or use --precision auto")
        return "fp32", "fp32 requested"
    if precision == "int8":
        if not int8_ok:
            raise ConfigError(
                f"the int8 export cannot be served: {int8_why}. Use --precision fp32 (or auto), "
                f"or {fix} with another calibration (its int8 config: method, calibration_images)"
            )
        return "int8", f"int8 requested; it {int8_why}"
    if int8_ok and (ratio is not None and ratio < 1.0 or not has_fp32):
        speed = f", {ratio:.2f}x fp32 latency at batch {DECIDING_BATCH}" if ratio else ""
        return "int8", f"auto: int8 {int8_why}{speed}"
    if not has_fp32:
        raise ConfigError(f"no servable export here: the int8 one {int8_why}; {fix}")
    if not int8_ok:
        return "fp32", f"auto: fp32, int8 not served ({int8_why})"
    if ratio is None:
        return "fp32", "auto: fp32, int8 latency was not measured"
    return "fp32", f"auto: fp32, int8 was not faster ({ratio:.2f}x fp32 at batch 1)"


def _int8_record(path: Path) -> dict[str, Any] | None:
    from food_assets.ml.export.metadata import OnnxMetadata

    return OnnxMetadata.from_props(read_props(path), source=str(path)).int8


def _split_exports(path: Path) -> tuple[Path | None, Path | None]:
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


def choose_export(path: str | os.PathLike[str], precision: str = "auto") -> ExportChoice:
    """The export to serve from an `.onnx` file or an `onnx_<name>` folder (module docstring).

    An int8 file named directly is served only if it passed its gate (there is no fp32 file to
    compare its source with, nor a latency to beat).

    Raises:
        ConfigError: an unknown precision, or one that cannot be served here (the message says
            why and how to fix it).
        CheckpointError: unreadable files.
    """
    check_precision(precision)
    facts = _Facts.read(Path(path))
    chosen, reason = decide(
        precision,
        has_fp32=facts.fp32 is not None,
        int8_ok=facts.int8_ok,
        int8_why=facts.int8_why,
        ratio=facts.ratio,
    )
    target = facts.int8 if chosen == "int8" else facts.fp32
    assert target is not None  # `decide` raised otherwise
    return ExportChoice(target, chosen, reason)


@dataclass(frozen=True)
class _Facts:
    """What the serving rule reads from an export folder or file."""

    fp32: Path | None
    int8: Path | None
    int8_ok: bool
    int8_why: str
    int8_verdict: str  # a few words: "none", "passed", "failed its gate", "never gated", "stale"
    ratio: float | None

    @classmethod
    def read(cls, path: Path) -> _Facts:
        from food_assets.ml.export.metadata import K_GRAPH_SHA

        fp32, int8 = _split_exports(path)
        record = _int8_record(int8) if int8 is not None else None
        fp32_sha = read_props(fp32).get(K_GRAPH_SHA) if fp32 is not None and int8 else None
        if int8 is None:
            ok, why = False, "there is none (the export was made with int8 off, or before int8)"
            verdict = "none"
        else:
            ok, why, verdict = _int8_verdict(record, fp32_sha)
        return cls(fp32, int8, ok, why, verdict, int8_speedup(record))


def auto_label(path: str | os.PathLike[str]) -> str:
    """What `--precision auto` serves from an export, in a few words for a table
    (`food-assets models`): `int8 (0.56x)`, or `fp32` with why int8 is not served, or
    `nothing (...)` for a lone int8 file that may not be served."""
    facts = _Facts.read(Path(path))
    if facts.fp32 is None and not facts.int8_ok:  # `decide` would refuse: nothing to serve
        return f"nothing (int8 {facts.int8_verdict})"
    chosen, _ = decide(
        "auto",
        has_fp32=facts.fp32 is not None,
        int8_ok=facts.int8_ok,
        int8_why=facts.int8_why,
        ratio=facts.ratio,
    )
    if chosen == "int8":
        return f"int8 ({facts.ratio:.2f}x)" if facts.ratio else "int8"
    if facts.int8_verdict == "none":
        return "fp32 (no int8)"
    if facts.int8_ok:  # passed, but not measured faster
        return f"fp32 (int8 {facts.ratio:.2f}x)" if facts.ratio else "fp32 (int8 not timed)"
    return f"fp32 (int8 {facts.int8_verdict})"


#: The leaderboard's latency columns: (backend in latency rows, batch) per column.
LATENCY_COLUMNS = {
    "eager_ms_b1": ("eager", 1),
    "ort_fp32_ms_b1": ("onnxruntime", 1),
    "ort_int8_ms_b1": ("onnxruntime_int8", 1),
    "eager_ms_b32": ("eager", 32),
    "ort_fp32_ms_b32": ("onnxruntime", 32),
    "ort_int8_ms_b32": ("onnxruntime_int8", 32),
}


def latency_summary(
    rows: list[Mapping[str, Any]] | None, int8_record: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A model's latency as the leaderboard shows it, from `onnx_<name>`'s latency rows and
    int8 record (either may be None).

    Returns:
        The `LATENCY_COLUMNS` (None where not measured), `latency_threads`, `serving` (the
        export precision `auto` serves: `fp32` / `int8`, None without an export) and
        `latency_ms`: the served export's batch-1 latency (eager's when nothing was exported).
    """
    from food_assets.ml.export.latency import median_ms

    rows = rows or []
    out: dict[str, Any] = {
        col: median_ms(rows, backend, batch) for col, (backend, batch) in LATENCY_COLUMNS.items()
    }
    threads = {r.get("threads") for r in rows if r.get("threads") is not None}
    out["latency_threads"] = threads.pop() if len(threads) == 1 else None
    serving = None
    if out["ort_fp32_ms_b1"] is not None:
        ok, why = int8_status(int8_record, None) if int8_record else (False, "none")
        fp32, int8 = out["ort_fp32_ms_b1"], out["ort_int8_ms_b1"]
        ratio = int8 / fp32 if int8 is not None and fp32 else int8_speedup(int8_record)
        serving, _ = decide("auto", has_fp32=True, int8_ok=ok, int8_why=why, ratio=ratio)
    out["serving"] = serving
    served = {"fp32": out["ort_fp32_ms_b1"], "int8": out["ort_int8_ms_b1"]}.get(serving or "")
    out["latency_ms"] = served if served is not None else out["eager_ms_b1"]
    return out
