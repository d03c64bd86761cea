"""Which variant answers: the serving rule `predict`, `load_model`, the demo, the server and the
leaderboard share (ADR 0013, ADR 0021).

A variant is a (backend, precision) pair run on one of an `onnx_<name>` folder's files:
ONNX Runtime (portable) on the fp32 export or its int8 twin, OpenVINO on the fp32 export at fp32
or bf16, or on the int8 file. `variants.ExportFacts` reads what each may do.

- Every variant but the reference (ONNX Runtime fp32, whose gate is parity with PyTorch) must
  have passed its accuracy gate against the reference on the test split, on the very file that
  is here, and its runtime must be present; a failed or never-gated variant is never served,
  whatever is asked.
- `--precision` and `--backend` narrow the choice (`auto`: any); among what is left, the
  variant with the lowest latency at `DECIDING_BATCH` as measured at export (all variants in
  one process, alternating) answers; a named variant that may not be served is a `ConfigError`
  that says why and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from food_assets.ml.errors import ConfigError
from food_assets.ml.inference.variants import (  # re-exported: the rule's vocabulary
    DECIDING_BATCH,
    REFERENCE,
    VARIANTS,
    Candidate,
    ExportFacts,
    gate_verdict,
    int8_speedup,
    int8_verdict,
)

__all__ = ["DECIDING_BATCH", "REFERENCE", "VARIANTS", "Candidate", "int8_speedup"]

PRECISIONS = ("auto", "fp32", "bf16", "int8")
BACKENDS = ("auto", "onnxruntime", "openvino")


@dataclass(frozen=True)
class ExportChoice:
    """The export to load, on which backend, and why.

    Attributes:
        path: the `.onnx` file.
        precision: `fp32`, `bf16` or `int8`.
        reason: one line for the user (`predict` prints it, the demo shows it).
        backend: `onnxruntime` or `openvino`.
    """

    path: Path
    precision: str
    reason: str
    backend: str = "onnxruntime"


def check_precision(precision: str) -> str:
    """`precision` if it is one of `PRECISIONS`, else a `ConfigError` naming them."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r} (auto: the "
            "fastest variant that passed its accuracy gate here)"
        )
    return precision


def check_backend(backend: str) -> str:
    """`backend` if it is one of `BACKENDS`, else a `ConfigError` naming them."""
    if backend not in BACKENDS:
        raise ConfigError(
            f"backend must be one of {', '.join(BACKENDS)}, not {backend!r} (auto: the fastest "
            "that passed its gates; onnxruntime: the portable one)"
        )
    return backend


def int8_status(record: Mapping[str, Any] | None, fp32_sha: str | None) -> tuple[bool, str]:
    """(servable, why) for an int8 record (`OnnxMetadata.int8`) next to an fp32 export whose
    graph hash is `fp32_sha` (None: no fp32 file to compare with)."""
    ok, why, _ = int8_verdict(record, fp32_sha)
    return ok, why


def _speed(c: Candidate) -> tuple[int, float]:
    """Sort key: measured variants by latency at `DECIDING_BATCH`, then unmeasured ones."""
    ms = c.ms.get(DECIDING_BATCH)
    return (0, ms) if ms is not None else (1, 0.0)


def decide_variant(
    precision: str, backend: str, candidates: Sequence[Candidate]
) -> tuple[Candidate, str]:
    """THE serving rule, on facts already read: (the variant to serve, reason). Pure.

    Among the candidates that match the request (`auto` matches any backend or precision), a
    variant that may not be served (`ok` false) is never chosen. With both named, that variant
    or an error saying why not; otherwise the servable match with the lowest measured latency
    at `DECIDING_BATCH` (measured ones before unmeasured ones; a tie keeps `VARIANTS` order,
    so the portable ONNX Runtime fp32 wins a tie).

    Raises:
        ConfigError: nothing servable matches the request (the message says why, and the fix).
    """
    check_precision(precision)
    check_backend(backend)
    fix = "re-materialize onnx_<name> (int8 and the OpenVINO variants are on by default)"
    order = {v: i for i, v in enumerate(VARIANTS)}
    matches = sorted(
        (
            c
            for c in candidates
            if precision in ("auto", c.precision) and backend in ("auto", c.backend)
        ),
        key=lambda c: order.get((c.backend, c.precision), len(order)),
    )
    servable = [c for c in matches if c.ok]
    asked = " ".join(x for x in (backend, precision) if x != "auto") or "auto"
    if not servable:
        if (
            precision == "fp32"
            and backend in ("auto", "onnxruntime")
            and not any(c.path for c in matches)
        ):
            raise ConfigError(f"there is no fp32 export here; {fix}, or use --precision auto")
        whys = "; ".join(f"{c.name}: {c.why}" for c in matches) or "no such variant here"
        if len(matches) == 1:
            whys = matches[0].why
        other = "--precision fp32 (or auto)" if precision != "fp32" else "--backend onnxruntime"
        if asked == "auto":
            raise ConfigError(f"no servable export here ({whys}); {fix}")
        raise ConfigError(
            f"the {asked} export cannot be served: {whys}. Use {other}, or {fix} with another "
            "calibration (its int8 config: method, calibration_images)"
        )
    best = min(servable, key=_speed)  # min keeps the first of equals: VARIANTS order
    if precision != "auto" and backend != "auto":
        return best, f"{best.name} requested; it {best.why}"
    ms = best.ms.get(DECIDING_BATCH)
    if ms is None:
        speed = ""
    elif best.relative:  # an export from before the variants record: ratios to fp32
        speed = f", {ms:.2f}x fp32 latency at batch {DECIDING_BATCH}"
    else:
        speed = f", {ms:.3g} ms at batch {DECIDING_BATCH}"
    passed_over = [
        f"{c.backend} {c.precision} not served ({c.verdict})" for c in matches if not c.ok
    ]
    skipped = f"; {', '.join(passed_over)}" if passed_over else ""
    return best, f"{asked}: {best.name}, the fastest that passed its gates{speed}{skipped}"


def decide(
    precision: str, *, has_fp32: bool, int8_ok: bool, int8_why: str, ratio: float | None
) -> tuple[str, str]:
    """The serving rule for an ONNX Runtime export pair (fp32 and its int8 twin), as
    `decide_variant` decides it: (`fp32` | `int8`, reason). Latencies are relative to fp32.

    Raises:
        ConfigError: the requested precision cannot be served.
    """
    check_precision(precision)
    rel = {DECIDING_BATCH: 1.0} if ratio is not None else {}
    candidates = [
        Candidate("onnxruntime", "int8", Path("int8"), int8_ok, int8_why, "",
                  {DECIDING_BATCH: ratio} if ratio is not None else {}, relative=True),
    ]  # fmt: skip
    if has_fp32:
        candidates.insert(0, Candidate("onnxruntime", "fp32", Path("fp32"), True, "is the "
                                       "reference", "reference", rel, relative=True))  # fmt: skip
    chosen, reason = decide_variant(precision, "auto", candidates)  # ONNX Runtime ones only
    return chosen.precision, reason


def choose_export(
    path: str | os.PathLike[str], precision: str = "auto", backend: str = "auto"
) -> ExportChoice:
    """The variant to serve from an `.onnx` file or an `onnx_<name>` folder (`decide_variant`).

    An int8 file named directly is served only if it passed its gate (there is no fp32 file to
    compare its source with, nor a latency to beat).

    Raises:
        ConfigError: an unknown precision or backend, or one that cannot be served here (the
            message says why and how to fix it).
        CheckpointError: unreadable files.
    """
    check_precision(precision)
    check_backend(backend)
    facts = ExportFacts.read(Path(path))
    chosen, reason = decide_variant(precision, backend, facts.candidates)
    assert chosen.path is not None  # a candidate without a file is never ok
    return ExportChoice(chosen.path, chosen.precision, reason, chosen.backend)


def describe_variants(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One row per variant of an export, for `food-assets models`: `variant`, `verdict`,
    `ms_b1`, `ms_b32` (None where not measured) and `auto` (whether `auto` serves it)."""
    facts = ExportFacts.read(Path(path))
    try:
        served = decide_variant("auto", "auto", facts.candidates)[0].name
    except ConfigError:
        served = None
    return [
        {
            "variant": c.name,
            "verdict": c.verdict if c.path is not None else "none",
            "ms_b1": c.ms.get(1) if facts.variants is not None else None,
            "ms_b32": c.ms.get(32) if facts.variants is not None else None,
            "auto": c.name == served,
        }
        for c in facts.candidates
    ]


def auto_label(path: str | os.PathLike[str]) -> str:
    """What `--precision auto --backend auto` serves from an export, in a few words for a
    table (`food-assets models`): `openvino/int8 (3.6 ms)`; for an export without OpenVINO
    variants `int8 (0.56x)`, or `fp32` with why int8 is not served, or `nothing (...)` for a
    lone int8 file that may not be served."""
    facts = ExportFacts.read(Path(path))
    if facts.fp32 is None and not facts.int8_ok:  # `decide` would refuse: nothing to serve
        return f"nothing (int8 {facts.int8_verdict})"
    if facts.variants is not None:
        chosen, _ = decide_variant("auto", "auto", facts.candidates)
        ms = chosen.ms.get(DECIDING_BATCH)
        return f"{chosen.name} ({ms:.3g} ms)" if ms is not None else chosen.name
    chosen_precision, _ = decide(
        "auto",
        has_fp32=facts.fp32 is not None,
        int8_ok=facts.int8_ok,
        int8_why=facts.int8_why,
        ratio=facts.ratio,
    )
    if chosen_precision == "int8":
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
    "ov_fp32_ms_b1": ("openvino_fp32", 1),
    "ov_bf16_ms_b1": ("openvino_bf16", 1),
    "ov_int8_ms_b1": ("openvino_int8", 1),
    "eager_ms_b32": ("eager", 32),
    "ort_fp32_ms_b32": ("onnxruntime", 32),
    "ort_int8_ms_b32": ("onnxruntime_int8", 32),
    "ov_fp32_ms_b32": ("openvino_fp32", 32),
    "ov_bf16_ms_b32": ("openvino_bf16", 32),
    "ov_int8_ms_b32": ("openvino_int8", 32),
}


def latency_summary(
    rows: list[Mapping[str, Any]] | None,
    int8_record: Mapping[str, Any] | None,
    variants: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A model's latency as the leaderboard shows it, from `onnx_<name>`'s latency rows, int8
    record and variants record (`variants.json`; any may be None).

    Returns:
        The `LATENCY_COLUMNS` (None where not measured), `latency_threads`, `serving` (what
        `auto` serves: `fp32` / `int8` on ONNX Runtime, `openvino/<precision>` on OpenVINO;
        None without an export) and `latency_ms`: the served variant's batch-1 latency (eager's
        when nothing was exported).
    """
    from food_assets.ml.export.latency import ROW_NAMES, median_ms

    rows = rows or []
    out: dict[str, Any] = {
        col: median_ms(rows, backend, batch) for col, (backend, batch) in LATENCY_COLUMNS.items()
    }
    threads = {r.get("threads") for r in rows if r.get("threads") is not None}
    out["latency_threads"] = threads.pop() if len(threads) == 1 else None
    served_ms = None
    out["serving"] = None
    if out["ort_fp32_ms_b1"] is not None:
        ok, why = int8_status(int8_record, None) if int8_record else (False, "none")
        gates = (variants or {}).get("gates") or {}
        candidates, measured = [], {}
        ratio = int8_speedup(int8_record)
        for name, row in ROW_NAMES.items():
            backend, precision = name.split("/")
            ms = measured[name] = median_ms(rows, row, DECIDING_BATCH)
            if name == "onnxruntime/fp32":
                c_ok, c_why = True, "reference"
            elif name == "onnxruntime/int8":
                c_ok, c_why = ok, why
                if ms is None and ratio is not None:  # not timed here: its record's ratio ranks it,
                    ms = ratio * out["ort_fp32_ms_b1"]  # as `choose_export` ranks the files
            else:
                entry = gates.get(name) or {}
                c_ok, c_why, _ = gate_verdict(entry.get("gate"))
            timed = {DECIDING_BATCH: ms} if ms is not None else {}
            candidates.append(Candidate(backend, precision, Path(name), c_ok, c_why, "", timed))
        chosen, _ = decide_variant("auto", "auto", candidates)
        out["serving"] = chosen.precision if chosen.backend == "onnxruntime" else chosen.name
        served_ms = measured[chosen.name]  # a figure measured here, never one derived
    out["latency_ms"] = served_ms if served_ms is not None else out["eager_ms_b1"]
    return out
