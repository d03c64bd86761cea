"""Asset-check decisions at their edges (`make mutation`; test_checks.py has the main cases)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from food_assets.ml.quality import (
    MAX_EXAMPLES,
    MAX_LISTED,
    check_every_class_in_every_split,
    check_gradcam_sanity,
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
