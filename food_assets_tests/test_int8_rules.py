"""The int8 rules on their own, fast: the gate's thresholds, the serving rule, the leaderboard's
latency columns, the precision metadata and the session options. The same rules on a trained
model and real exports: `test_int8.py`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import CheckpointError, ConfigError
from food_assets.ml.evaluation import compare_models
from food_assets.ml.export import create_session, load_onnx
from food_assets.ml.export.metadata import K_INT8, K_PRECISION, OnnxMetadata
from food_assets.ml.inference.serving import decide, latency_summary
from food_assets.ml.quality import check_int8_gate
from food_assets_tests.tiny_onnx import tiny_onnx

GATE = {"min_agreement": 0.99, "max_drop_points": 0.5}


def _preds(n: int, flips: int, wrong_extra: int = 0):
    """fp32 right on every image; int8 flips `flips` of them to a wrong class; labels."""
    labels = np.zeros(n, dtype=int)
    fp32 = labels.copy()
    int8 = labels.copy()
    int8[:flips] = 1
    fp32[flips : flips + wrong_extra] = 1  # fp32 wrong where int8 is wrong too: no disagreement
    int8[flips : flips + wrong_extra] = 1
    return fp32, int8, labels


@pytest.mark.parametrize(
    ("n", "flips", "passed"),
    [(1000, 0, True), (1000, 5, True), (1000, 10, False), (150, 1, False), (200, 1, True)],
)
def test_int8_gate_thresholds(n: int, flips: int, passed: bool) -> None:
    """Breakage caught: `>` for `>=` on either threshold, agreement and drop mixed up, or the
    drop in fractions where the threshold is in points."""
    outcome = check_int8_gate(*_preds(n, flips), **GATE)
    assert outcome.passed is passed
    assert outcome.metadata["top1_agreement"] == pytest.approx(1 - flips / n)
    assert outcome.metadata["drop_points"] == pytest.approx(100 * flips / n)


def test_int8_gate_boundaries_and_empty_input() -> None:
    """Breakage caught: exactly 99 % agreement or exactly 0.5 points refused, a gain in
    accuracy counted as a drop, or an empty test set reported as a pass."""
    assert check_int8_gate(*_preds(100, 1), min_agreement=0.99, max_drop_points=1.0).passed
    assert not check_int8_gate(*_preds(100, 1), min_agreement=0.99, max_drop_points=0.99).passed
    fp32, int8, labels = _preds(1000, 0)
    fp32[:5] = 1  # fp32 wrong on 5 images where int8 is right: agreement 99.5 %, drop -0.5
    gain = check_int8_gate(fp32, int8, labels, **GATE)
    assert gain.passed and gain.metadata["drop_points"] == pytest.approx(-0.5)
    empty = check_int8_gate([], [], [], **GATE)
    assert not empty.passed and empty.description.startswith("not evaluated")
    with pytest.raises(ValueError, match="predictions"):
        check_int8_gate([0], [0, 1], [0], **GATE)


@pytest.mark.parametrize(
    ("precision", "has_fp32", "ok", "ratio", "served"),
    [
        ("auto", True, True, 0.4, "int8"),
        ("auto", True, True, 1.0, "fp32"),  # not faster: fp32
        ("auto", True, True, None, "fp32"),  # not measured: fp32
        ("auto", True, False, 0.4, "fp32"),  # failed gate, however fast
        ("auto", False, True, None, "int8"),  # an int8 file alone that passed
        ("fp32", True, True, 0.4, "fp32"),
        ("int8", True, True, 1.5, "int8"),  # asked for: served even if slower
    ],
)
def test_serving_rule(precision, has_fp32, ok, ratio, served) -> None:
    """Breakage caught: auto serving int8 that failed or was not faster, or ignoring the
    request."""
    got, reason = decide(precision, has_fp32=has_fp32, int8_ok=ok, int8_why="why", ratio=ratio)
    assert got == served and reason


@pytest.mark.parametrize(
    ("precision", "has_fp32", "ok", "message"),
    [
        ("int8", True, False, "cannot be served: why.*--precision fp32"),
        ("fp32", False, True, "no fp32 export"),
        ("auto", False, False, "no servable export"),
        ("fp16", True, True, "precision must be one of auto, fp32, bf16, int8, not 'fp16'"),
        ("bf16", True, True, "bf16 export cannot be served: no such variant here"),  # ORT: none
    ],
)
def test_serving_rule_errors_name_the_fix(precision, has_fp32, ok, message) -> None:
    with pytest.raises(ConfigError, match=message):
        decide(precision, has_fp32=has_fp32, int8_ok=ok, int8_why="why", ratio=0.5)


def _rows(fp32_b1: float, int8_b1: float) -> list[dict]:
    rows = []
    for backend, b1 in (("eager", 40.0), ("onnxruntime", fp32_b1), ("onnxruntime_int8", int8_b1)):
        for batch, ms in ((1, b1), (32, 20 * b1)):
            rows.append({"backend": backend, "batch": batch, "median_ms": ms, "threads": 2})
    return rows


PASSED = {"gate": {"passed": True, "description": "ok"}}
FAILED = {"gate": {"passed": False, "description": "agreement 90 %"}}


def test_leaderboard_latency_shows_every_backend_and_the_served_export() -> None:
    """Breakage caught: a failed or slower int8 shown as the served latency, columns swapped
    between backends or batch sizes, or the thread count dropped."""
    fast = latency_summary(_rows(10.0, 4.0), PASSED)
    assert (fast["serving"], fast["latency_ms"], fast["latency_threads"]) == ("int8", 4.0, 2)
    assert (fast["eager_ms_b1"], fast["ort_fp32_ms_b1"], fast["ort_int8_ms_b32"]) == (
        40.0,
        10.0,
        80.0,
    )
    assert latency_summary(_rows(10.0, 4.0), FAILED)["serving"] == "fp32"
    assert latency_summary(_rows(10.0, 4.0), FAILED)["latency_ms"] == 10.0
    assert latency_summary(_rows(10.0, 12.0), PASSED)["latency_ms"] == 10.0
    none = latency_summary(None, None)
    assert none["serving"] is None and none["latency_ms"] is None

    table = compare_models(
        [
            {"model": "a", "acc_top1": 0.8, **latency_summary(_rows(10.0, 4.0), PASSED)},
            {"model": "b", "acc_top1": 0.7, **latency_summary(_rows(10.0, 4.0), FAILED)},
        ]
    )
    assert list(table.table["serving"]) == ["int8", "fp32"]
    header = table.markdown.splitlines()[0]
    for column in ("served", "eager b1", "ORT fp32 b1", "ORT int8 b32", "threads"):
        assert column in header


def test_precision_metadata_is_validated(tmp_path) -> None:
    """Breakage caught: an unknown precision, an int8 file without its record, or an fp32 file
    with one, loading as if fine."""
    pre = Preprocess(input_size=8)
    meta = OnnxMetadata("m", ("a", "b"), pre)
    assert meta.to_props()[K_PRECISION] == "fp32" and K_INT8 not in meta.to_props()
    props = {**meta.to_props(), "food_assets.graph_sha256": "x"}
    with pytest.raises(CheckpointError, match="precision 'fp16'"):
        OnnxMetadata.from_props({**props, K_PRECISION: "fp16"})
    with pytest.raises(CheckpointError, match="int8 record"):
        OnnxMetadata.from_props({**props, K_PRECISION: "int8"})
    with pytest.raises(CheckpointError, match="int8 record"):
        OnnxMetadata.from_props({**props, K_INT8: json.dumps({"gate": None})})
    old = {k: v for k, v in props.items() if k != K_PRECISION}  # a file from before int8
    assert OnnxMetadata.from_props(old).precision == "fp32"
    path = tiny_onnx(tmp_path / "m.onnx", np.eye(3, 2), class_names=("a", "b"), preprocess=pre)
    assert load_onnx(path)[1].precision == "fp32"


@pytest.mark.parametrize(("policy", "spin"), [("PASSIVE", "0"), ("ACTIVE", "1"), ("", "0")])
def test_sessions_spin_only_when_openmp_does(tmp_path, monkeypatch, policy, spin) -> None:
    """Breakage caught: ORT's default (spinning) left on under food_assets' PASSIVE policy, or
    the explicit argument ignored."""
    pre = Preprocess(input_size=8)
    path = tiny_onnx(tmp_path / "m.onnx", np.eye(3, 2), class_names=("a", "b"), preprocess=pre)
    monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    configs = create_session(path).get_session_options().get_session_config_entry
    assert configs("session.intra_op.allow_spinning") == spin
    assert configs("session.inter_op.allow_spinning") == spin
    forced = create_session(path, spinning=spin == "0").get_session_options()
    assert forced.get_session_config_entry("session.intra_op.allow_spinning") != spin


def test_a_variant_gate_reports_its_accuracy_under_its_own_key() -> None:
    """An OpenVINO variant's gate (`variant="openvino/bf16"`) reports its accuracy as
    `acc_top1_variant`, int8's as `acc_top1_int8`. Breakage caught: every variant's accuracy
    filed as int8's, or under a misspelt key."""
    preds = _preds(1000, 5)
    bf16 = check_int8_gate(*preds, **GATE, variant="openvino/bf16").metadata
    assert "acc_top1_int8" not in bf16 and bf16["acc_top1_variant"] == pytest.approx(0.995)
    int8 = check_int8_gate(*preds, **GATE).metadata
    assert "acc_top1_variant" not in int8 and int8["acc_top1_int8"] == pytest.approx(0.995)
