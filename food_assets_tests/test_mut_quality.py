"""Asset-check decisions at their edges (`make mutation`; test_checks.py has the main cases)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from food_assets.ml.quality import (
    MAX_EXAMPLES,
    MAX_LISTED,
    check_every_class_in_every_split,
    check_gradcam_sanity,
    check_int8_gate,
    check_no_content_leak,
    check_no_image_in_two_splits,
)


def _frame(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["path", "label", "split", "sha256"])


def test_missing_classes_are_listed_by_split_then_name_and_cut_at_the_limit() -> None:
    frame = _frame([("a.jpg", "a", "train", "1"), ("b.jpg", "a", "val", "2")])
    out = check_every_class_in_every_split(frame, ["z", "a", "m"], splits=("train", "test"))
    # train lacks m and z; test lacks all three: sorted by name within each split
    assert (
        out.description
        == "missing: m (no train), z (no train), a (no test), m (no test), z (no test)"
    )
    assert out.metadata == {"missing": 5} and out.passed is False
    many = [f"c{i:02d}" for i in range(30)]
    out = check_every_class_in_every_split(frame, many, splits=("val",))
    assert out.description == "missing: " + ", ".join(f"{c} (no val)" for c in many[:MAX_LISTED])
    assert out.metadata == {"missing": 30}


def test_examples_are_sorted_joined_and_cut_at_the_limit() -> None:
    rows = []
    for i in reversed(range(7)):  # 7 paths in two splits each, listed backwards
        rows += [(f"p{i}.jpg", "a", "train", f"t{i}"), (f"p{i}.jpg", "a", "val", f"v{i}")]
    out = check_no_image_in_two_splits(_frame(rows))
    assert out.passed is False and out.description == "7 image(s) in more than one split"
    assert out.metadata == {
        "images_in_two_splits": 7,
        "examples": ", ".join(f"p{i}.jpg" for i in range(MAX_EXAMPLES)),
    }


def test_leak_examples_are_sorted_joined_and_cut_at_the_limit() -> None:
    rows = [(f"train{i}.jpg", "a", "train", f"s{i}") for i in range(7)]
    rows += [(f"test{i}.jpg", "a", "test", f"s{i}") for i in reversed(range(7))]
    out = check_no_content_leak(_frame(rows))
    assert out.passed is False
    assert out.description == "7 test image(s) identical to a train/val image"
    assert out.metadata == {
        "leaked": 7,
        "examples": ", ".join(f"test{i}.jpg" for i in range(MAX_EXAMPLES)),
    }


def test_a_pointing_game_tie_with_chance_fails() -> None:
    out = check_gradcam_sanity(
        {"gradcam/pointing_game": 0.25, "gradcam/pointing_random_expected": 0.25}
    )
    assert out.passed is False and out.description == "pointing game 0.25 vs random 0.25"


def test_numpy_figures_give_a_plain_bool() -> None:
    out = check_gradcam_sanity(
        {"gradcam/pointing_game": np.float64(0.5), "gradcam/pointing_random_expected": 0.25}
    )
    assert out.passed is True
    deletion = {"gradcam/deletion_cam_drop": np.float32(0.3), "gradcam/deletion_random_drop": 0.1}
    assert check_gradcam_sanity(deletion).passed is True


def test_half_a_pointing_figure_falls_back_to_deletion() -> None:
    deletion = {"gradcam/deletion_cam_drop": 0.30, "gradcam/deletion_random_drop": 0.05}
    for pointing in (
        {"gradcam/pointing_game": 0.9},
        {"gradcam/pointing_game": 0.9, "gradcam/pointing_random_expected": math.nan},
        {"gradcam/pointing_random_expected": 0.1},
    ):
        out = check_gradcam_sanity({**pointing, **deletion})
        assert out.passed is True
        assert out.description == "deletion drop 0.300 (CAM region) vs 0.050 (random region)"


def test_half_a_deletion_figure_is_not_evaluated() -> None:
    for metrics in (
        {"gradcam/deletion_cam_drop": 0.3},
        {"gradcam/deletion_random_drop": 0.3},
        {"gradcam/deletion_cam_drop": 0.3, "gradcam/deletion_random_drop": math.inf},
    ):
        out = check_gradcam_sanity(metrics)
        assert out.passed is False
        assert out.description == "not evaluated: no sanity figure could be computed"


# -- the int8 gate (`check_int8_gate`, issue #14) ------------------------------------------------


def _preds(n: int, *, flips: int = 0, int8_wrong: int = 0) -> tuple[np.ndarray, ...]:
    """`n` test images, label 0. int8 disagrees with fp32 on `flips` of them: on the first
    `int8_wrong` fp32 is right and int8 wrong; on the rest both are wrong, differently (a flip
    that leaves accuracy alone)."""
    labels = np.zeros(n, dtype=np.int64)
    fp32 = labels.copy()
    int8 = labels.copy()
    int8[:int8_wrong] = 1  # right -> wrong
    # flips that do not change accuracy: fp32 wrong (class 2), int8 wrong differently (class 3)
    others = slice(int8_wrong, flips)
    fp32[others], int8[others] = 2, 3
    return fp32, int8, labels


def test_int8_gate_passes_exactly_at_its_thresholds_and_fails_just_past_them() -> None:
    """Breakage caught: `>=`/`<=` turned strict, the rounding tolerances dropped or widened,
    agreement or the drop computed on the wrong pair, the drop in fractions, not points."""
    # 200 images: one right->wrong flip is 0.5 points and 99.5 % agreement.
    fp32, int8, labels = _preds(200, flips=1, int8_wrong=1)
    out = check_int8_gate(fp32, int8, labels, min_agreement=0.995, max_drop_points=0.5)
    assert out.passed, out.description
    assert out.metadata["drop_points"] == pytest.approx(0.5)
    assert out.metadata["top1_agreement"] == pytest.approx(0.995)
    assert not check_int8_gate(fp32, int8, labels, min_agreement=0.995, max_drop_points=0.49).passed
    assert not check_int8_gate(fp32, int8, labels, min_agreement=0.9951, max_drop_points=0.5).passed
    # Two flips that leave accuracy alone: agreement 99 %, drop 0.
    fp32, int8, labels = _preds(200, flips=2)
    out = check_int8_gate(fp32, int8, labels, min_agreement=0.99, max_drop_points=0.0)
    assert out.passed and out.metadata["drop_points"] == 0.0
    assert out.metadata["acc_top1_fp32"] == out.metadata["acc_top1_int8"] == pytest.approx(0.99)
    assert not check_int8_gate(fp32, int8, labels, min_agreement=0.991, max_drop_points=0).passed


def test_int8_gate_lets_int8_be_better_and_reports_every_figure() -> None:
    """Breakage caught: the drop's sign flipped (int8 better failing the gate), a metadata key
    or the description's figures wrong."""
    labels = np.array([0, 1, 2, 3])
    fp32 = np.array([0, 1, 2, 0])  # 3/4 right
    int8 = np.array([0, 1, 2, 3])  # 4/4 right
    out = check_int8_gate(fp32, int8, labels, min_agreement=0.75, max_drop_points=0.5)
    assert out.passed
    assert out.metadata == {
        "top1_agreement": 0.75,
        "acc_top1_fp32": 0.75,
        "acc_top1_int8": 1.0,
        "drop_points": -25.0,
        "n_images": 4,
        "min_agreement": 0.75,
        "max_drop_points": 0.5,
    }
    assert out.description == (
        "top-1 agreement 75.00% (min 75.00%), accuracy 100.00% int8 vs 75.00% fp32 "
        "(drop -25.00 points, max 0.5) on 4 test images"
    )
    out = check_int8_gate(int8, fp32, labels, min_agreement=0.75, max_drop_points=24.9)
    assert not out.passed and out.metadata["drop_points"] == 25.0


def test_int8_gate_without_images_is_not_evaluated_and_mismatched_lengths_raise() -> None:
    """Breakage caught: an empty test split passing the gate, or predictions of another length
    compared silently (numpy broadcasting a length-1 array)."""
    out = check_int8_gate([], [], [], min_agreement=0.99, max_drop_points=0.5)
    assert out.passed is False and out.description == "not evaluated: no test images"
    assert out.metadata == {"n_images": 0}
    for fp32, int8, labels in (([0], [0, 1], [0, 1]), ([0, 1], [0], [0, 1]), ([0, 1], [0, 1], [0])):
        with pytest.raises(ValueError, match="check_int8_gate: .* fp32, .* int8 predictions and"):
            check_int8_gate(fp32, int8, labels, min_agreement=0.5, max_drop_points=1)
