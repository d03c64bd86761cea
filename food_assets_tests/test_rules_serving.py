"""The serving rule (`--precision auto`, ADR 0013) on real ONNX files, fast: hand-built exports
(`tiny_onnx`) that carry the int8 record the rule reads, so every boundary costs milliseconds.
The same rule on a trained model's real int8 export: `test_int8.py`."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import CheckpointError, ConfigError
from food_assets.ml.export.metadata import K_GRAPH_SHA
from food_assets.ml.inference.serving import (
    DECIDING_BATCH,
    auto_label,
    choose_export,
    decide,
    int8_speedup,
    int8_status,
    latency_summary,
)
from food_assets_tests.tiny_onnx import tiny_onnx

PRE = Preprocess(input_size=8)
CLASSES = ("a", "b")
W = np.eye(3, 2, dtype=np.float32)


def _record(ratio=None, *, passed=True, sha=None, by_batch=None) -> dict:
    rec: dict = {"gate": {"passed": passed, "description": "agreement 99.5 %"}}
    if sha is not None:
        rec["source_graph_sha256"] = sha
    if by_batch is not None:
        rec["latency"] = {"by_batch": by_batch}
    elif ratio is not None:
        rec["latency"] = {"by_batch": {"1": {"int8_over_fp32": ratio}}}
    return rec


def _export(folder, record=None, *, fp32: bool = True, stale: bool = False):
    """`model.onnx` (unless fp32=False) and, with a record, `model_int8.onnx` made from it."""
    fp32_path = tiny_onnx(folder / "model.onnx", W, class_names=CLASSES, preprocess=PRE)
    sha = dict((p.key, p.value) for p in onnx.load(str(fp32_path)).metadata_props)[K_GRAPH_SHA]
    if record is not None:
        record = {**record, "source_graph_sha256": "0" * 64 if stale else sha}
        tiny_onnx(folder / "model_int8.onnx", W, class_names=CLASSES, preprocess=PRE,
                  precision="int8", int8=record)  # fmt: skip
    if not fp32:
        fp32_path.unlink()
    return folder


@pytest.mark.parametrize(
    ("ratio", "served"),
    [
        (0.5, "int8"),
        (0.999, "int8"),  # just faster
        (1.0, "fp32"),  # exactly as fast: not faster, fp32
        (1.001, "fp32"),  # just slower
        (None, "fp32"),  # never timed
    ],
)
def test_auto_serves_int8_only_when_strictly_faster(tmp_path, ratio, served) -> None:
    """The latency threshold at its limit and either side of it, read from the file.
    Breakage seen failing: `ratio <= 1.0` (the 1.0 row), `ratio < 1.01`, the ratio ignored."""
    folder = _export(tmp_path, _record(ratio))
    choice = choose_export(folder)
    assert choice.precision == served
    assert choice.path.name == ("model_int8.onnx" if served == "int8" else "model.onnx")
    assert choose_export(folder / "model.onnx").precision == served  # the file: same rule
    assert auto_label(folder).startswith(served)


def test_auto_reads_the_batch_1_latency_not_batch_32(tmp_path) -> None:
    """int8 faster at batch 32 only: fp32 serves; faster at batch 1 only: int8 serves.
    Breakage seen failing: DECIDING_BATCH = 32, reading the first row whatever its batch."""
    assert DECIDING_BATCH == 1
    slow_b1 = {"32": {"int8_over_fp32": 0.4}, "1": {"int8_over_fp32": 1.3}}
    fast_b1 = {"1": {"int8_over_fp32": 0.7}, "32": {"int8_over_fp32": 1.3}}
    assert choose_export(_export(tmp_path / "a", _record(by_batch=slow_b1))).precision == "fp32"
    choice = choose_export(_export(tmp_path / "b", _record(by_batch=fast_b1)))
    assert (choice.precision, "0.70x" in choice.reason) == ("int8", True)
    assert auto_label(tmp_path / "b") == "int8 (0.70x)"
    assert auto_label(tmp_path / "a") == "fp32 (int8 1.30x)"


@pytest.mark.parametrize(
    ("record", "stale", "label"),
    [
        (_record(0.5, passed=False), False, "fp32 (int8 failed its gate)"),
        ({"latency": {"by_batch": {"1": {"int8_over_fp32": 0.5}}}}, False,
         "fp32 (int8 never gated)"),
        (_record(0.5), True, "fp32 (int8 stale)"),
        ({"gate": {"passed": "yes"}, "latency": {"by_batch": {"1": {"int8_over_fp32": 0.5}}}},
         False, "fp32 (int8 failed its gate)"),  # only True passes, not a truthy value
    ],
)  # fmt: skip
def test_a_fast_int8_that_may_not_serve_never_does(tmp_path, record, stale, label) -> None:
    """Each reason alone, with int8 measured twice as fast. Breakage seen failing: the gate's
    `is not True` turned into a truthiness test (the "yes" row), the stale check dropped."""
    folder = _export(tmp_path, record, stale=stale)
    assert choose_export(folder).precision == "fp32"
    assert auto_label(folder) == label
    with pytest.raises(ConfigError, match="cannot be served"):
        choose_export(folder, "int8")
    assert choose_export(folder, "fp32").path.name == "model.onnx"


def test_explicit_requests_and_lone_files(tmp_path) -> None:
    """Asked-for precision wins over speed; a lone int8 file serves only if it passed.
    Breakage seen failing: `int8` refused when slower, a lone failed int8 file served."""
    slow = _export(tmp_path / "slow", _record(1.5))
    assert choose_export(slow, "int8").path.name == "model_int8.onnx"
    assert choose_export(slow, "fp32").precision == "fp32"
    lone = _export(tmp_path / "lone", _record(None), fp32=False)
    assert choose_export(lone).path.name == "model_int8.onnx"
    assert choose_export(lone / "model_int8.onnx").precision == "int8"
    with pytest.raises(ConfigError, match="no fp32 export"):
        choose_export(lone, "fp32")
    failed = _export(tmp_path / "failed", _record(0.5, passed=False), fp32=False)
    assert auto_label(failed) == "nothing (int8 failed its gate)"
    with pytest.raises(ConfigError, match="no servable export"):
        choose_export(failed)
    plain = _export(tmp_path / "plain")
    assert (choose_export(plain).precision, auto_label(plain)) == ("fp32", "fp32 (no int8)")
    with pytest.raises(
        ConfigError, match="int8 export cannot be served: onnxruntime/int8: there is none"
    ):
        choose_export(plain, "int8")
    tiny_onnx(tmp_path / "plain" / "other.onnx", W, class_names=CLASSES, preprocess=PRE)
    with pytest.raises(CheckpointError, match="holds 2 .onnx files"):
        choose_export(plain)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(CheckpointError, match="not a readable ONNX file"):
        choose_export(tmp_path / "junk.onnx")


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (None, None),
        ({}, None),
        (_record(0.25), 0.25),
        (_record(0), None),  # not a measurement
        (_record(-1.0), None),
        (_record("0.5"), None),
        (_record(by_batch={"32": {"int8_over_fp32": 0.5}}), None),
    ],
)
def test_int8_speedup_reads_only_a_positive_batch_1_number(record, expected) -> None:
    """Breakage seen failing: `ratio >= 0` (the 0 row), the batch key as an int."""
    assert int8_speedup(record) == expected


def test_int8_status_needs_a_passed_gate_and_the_same_source() -> None:
    """Breakage seen failing: the source hash compared when there is no fp32 file (None)."""
    rec = _record(0.5, sha="abc")
    assert int8_status(rec, "abc")[0] is True
    assert int8_status(rec, None)[0] is True  # a lone int8 file: nothing to compare with
    assert int8_status(rec, "xyz") == (False, "it was made from another fp32 export than the "
                                       "one beside it (stale)")  # fmt: skip
    assert int8_status(None, "abc") == (False, "it carries no int8 record")


def _rows(fp32_b1: float, int8_b1: float) -> list[dict]:
    return [
        {"backend": b, "batch": n, "median_ms": ms * (20 if n == 32 else 1), "threads": 2}
        for b, ms in (("eager", 40.0), ("onnxruntime", fp32_b1), ("onnxruntime_int8", int8_b1))
        for n in (1, 32)
    ]


@pytest.mark.parametrize(
    ("fp32", "int8", "served", "latency"),
    [(10.0, 9.99, "int8", 9.99), (10.0, 10.0, "fp32", 10.0), (10.0, 10.01, "fp32", 10.0)],
)
def test_the_leaderboard_serves_what_auto_serves_at_the_boundary(fp32, int8, served, latency):
    """The leaderboard's `serving` and `latency_ms` follow the measured batch-1 medians with the
    same strict threshold. Breakage seen failing: `int8 <= fp32` (the equal row)."""
    out = latency_summary(_rows(fp32, int8), _record(None))
    assert (out["serving"], out["latency_ms"]) == (served, latency)
    assert out["latency_threads"] == 2
    mixed = [*_rows(fp32, int8)[:-1], {**_rows(fp32, int8)[-1], "threads": 4}]
    assert latency_summary(mixed, _record(None))["latency_threads"] is None


def test_decide_names_the_reason_of_each_outcome() -> None:
    """The reason a user reads matches the rule that fired. Breakage seen failing: the
    "not faster" and "not measured" branches swapped."""
    args = {"has_fp32": True, "int8_ok": True, "int8_why": "passed"}
    fastest = "the fastest that passed its gates"
    assert decide("auto", ratio=0.5, **args) == (
        "int8", f"auto: onnxruntime/int8, {fastest}, 0.50x fp32 latency at batch 1",
    )  # fmt: skip
    # int8 never timed: fp32 (measured variants rank before unmeasured ones), no speed quoted
    assert decide("auto", ratio=None, **args) == ("fp32", f"auto: onnxruntime/fp32, {fastest}")
    # a tie keeps the portable reference
    assert decide("auto", ratio=1.0, **args) == (
        "fp32", f"auto: onnxruntime/fp32, {fastest}, 1.00x fp32 latency at batch 1",
    )  # fmt: skip
    assert decide("fp32", ratio=0.5, **args)[0] == "fp32"


# -- what mutmut found (#22): messages, odd files, the leaderboard's fallbacks --------------------


def test_every_refusal_names_its_reason_and_the_fix(tmp_path) -> None:
    """The exact words a user reads. Breakage seen failing (mutmut survivors): the gate's
    description or its default dropped, the "never gated" reason altered, the fix text
    altered or None, the precision choices' explanation altered."""
    from food_assets.ml.inference.serving import check_precision

    assert int8_status({"gate": "yes"}, None) == (
        False, "it was never gated (no accuracy gate in its record)",
    )  # fmt: skip
    assert int8_status({"gate": {"passed": False, "description": "agreement 90 %"}}, None)[1] == (
        "it failed its accuracy gate (agreement 90 %)"
    )
    assert int8_status({"gate": {"passed": False}}, None)[1] == (
        "it failed its accuracy gate (no details)"
    )
    assert int8_status({"gate": {"passed": True, "description": "ok"}}, None)[1] == (
        "passed its accuracy gate (ok)"
    )
    assert int8_status({"gate": {"passed": True}}, None)[1] == "passed its accuracy gate ()"
    fix = "re-materialize onnx_<name> (int8 and the OpenVINO variants are on by default)"
    for precision, fp32 in (("fp32", False), ("auto", False), ("int8", True)):
        with pytest.raises(ConfigError) as info:
            decide(precision, has_fp32=fp32, int8_ok=False, int8_why="w", ratio=None)
        assert fix in str(info.value)
    with pytest.raises(ConfigError) as info:
        decide("fp32", has_fp32=False, int8_ok=True, int8_why="w", ratio=None)
    assert str(info.value) == f"there is no fp32 export here; {fix}, or use --precision auto"
    with pytest.raises(ConfigError) as info:
        check_precision("fp16")
    assert str(info.value) == (
        "precision must be one of auto, fp32, bf16, int8, not 'fp16' (auto: the fastest variant "
        "that passed its accuracy gate here)"
    )
    # int8 alone, never timed: served with no speed in the reason.
    assert decide("auto", has_fp32=False, int8_ok=True, int8_why="w", ratio=None) == (
        "int8", "auto: onnxruntime/int8, the fastest that passed its gates",
    )  # fmt: skip


def test_verdict_words_in_the_models_table(tmp_path) -> None:
    """`auto_label`'s few words for a record without anything in it, and a lone int8 file that
    passed but was never timed. Breakage seen failing: the "never gated" word altered, the
    bare "int8" label altered or replaced by a ratio."""
    empty = _export(tmp_path / "empty", {})
    assert auto_label(empty) == "fp32 (int8 never gated)"
    assert int8_status(None, None) == (False, "it carries no int8 record")
    lone = _export(tmp_path / "lone", _record(None), fp32=False)
    assert auto_label(lone) == "int8"


def test_odd_files_in_an_export_folder(tmp_path) -> None:
    """A hidden leftover is not an export; an fp32 file named directly without a twin serves
    fp32; an int8 twin with broken metadata is refused naming that file; the metadata is read
    without the external weights. Breakage seen failing: hidden files counted ("holds 2"), a
    missing twin treated as present, the error's `source` dropped. (`load_external_data=True`
    survives this: onnx does not raise for a missing data file; listed as equivalent.)"""
    import shutil

    folder = _export(tmp_path / "a")
    shutil.copy(folder / "model.onnx", folder / ".model.onnx.tmp-1.onnx")
    assert choose_export(folder).path.name == "model.onnx"
    assert choose_export(folder / "model.onnx").precision == "fp32"

    broken = _export(tmp_path / "b", _record(0.5))
    proto = onnx.load(str(broken / "model_int8.onnx"))
    keep = [p for p in proto.metadata_props if p.key.endswith("precision")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    onnx.save(proto, str(broken / "model_int8.onnx"))
    with pytest.raises(CheckpointError, match=r"model_int8\.onnx: metadata lacks"):
        choose_export(broken)

    external = tmp_path / "c"
    external.mkdir()
    proto = onnx.load(str(_export(tmp_path / "d") / "model.onnx"))
    onnx.save_model(proto, str(external / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="w.bin", size_threshold=0)  # fmt: skip
    (external / "w.bin").unlink()  # props are readable without the weights
    assert choose_export(external).precision == "fp32"


def test_the_leaderboard_without_an_int8_record_or_an_int8_timing() -> None:
    """No record: fp32 whatever the timings; no int8 timing: the record's ratio decides;
    nothing exported: the eager latency. Breakage seen failing: (True, ...) for a missing
    record, `int8 / fp32` with int8 missing, the record ignored, `served` used when None."""
    out = latency_summary(_rows(10.0, 4.0), None)
    assert (out["serving"], out["latency_ms"]) == ("fp32", 10.0)
    fp32_only = [r for r in _rows(10.0, 4.0) if r["backend"] != "onnxruntime_int8"]
    out = latency_summary(fp32_only, _record(0.5))
    assert out["serving"] == "int8" and out["ort_int8_ms_b1"] is None
    assert out["latency_ms"] == 40.0  # int8 served but not timed here: eager's, never None
    eager_only = [r for r in _rows(10.0, 4.0) if r["backend"] == "eager"]
    out = latency_summary(eager_only, None)
    assert (out["serving"], out["latency_ms"]) == (None, 40.0)
