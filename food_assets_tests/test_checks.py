"""Every asset check fails when its condition is false: the pure decisions behind the checks
(`food_assets.ml.quality`, `accuracy_check_result`, the Grad-CAM sanity verdict) on bad input,
and the "not evaluated" result of a check whose model was skipped.

Fast: no Dagster run here (`test_checks_runs.py` has the runs).
"""

from __future__ import annotations

import math

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from food_assets.defs.assets._common import not_evaluated
from food_assets.defs.assets.evaluation import (
    ACCURACY_CHECK,
    EvaluationReport,
    accuracy_check_result,
)
from food_assets.defs.assets.explain import SANITY_CHECK, sanity_check_result
from food_assets.defs.resources import QualityGates
from food_assets.ml.explain.sanity import deletion_test, pointing_baseline, pointing_game
from food_assets.ml.models import get_model_spec, list_models
from food_assets.ml.quality import (
    check_every_class_in_every_split,
    check_gradcam_sanity,
    check_no_content_leak,
    check_no_image_in_two_splits,
)

CLASSES = ("apple_pie", "bibimbap", "churros")


def _manifest() -> pd.DataFrame:
    """A clean split manifest: 3 classes, each with 3 train, 1 val and 1 test image, every
    image its own content."""
    rows = []
    for c in CLASSES:
        for i, split in enumerate(["train", "train", "train", "val", "test"]):
            rows.append({"path": f"/img/{c}/{i}.jpg", "label": c, "split": split})
    frame = pd.DataFrame(rows)
    frame["sha256"] = [f"{i:064x}" for i in range(len(frame))]
    return frame


def _row(frame: pd.DataFrame, label: str, split: str) -> int:
    return frame.index[(frame.label == label) & (frame.split == split)][0]


# --------------------------------------------------------------------------------------------
# food_splits: the three split checks


def test_a_clean_manifest_passes_all_three_split_checks():
    """Catches a check that fails on good input (a flipped comparison fails everything)."""
    frame = _manifest()
    classes = check_every_class_in_every_split(frame, CLASSES)
    assert (classes.passed, classes.description, classes.metadata) == (
        True,
        "all classes present",
        {"missing": 0},
    )
    twice = check_no_image_in_two_splits(frame)
    assert (twice.passed, twice.description) == (True, "0 image(s) in more than one split")
    assert twice.metadata == {"images_in_two_splits": 0, "examples": "none"}
    leak = check_no_content_leak(frame)
    assert (leak.passed, leak.description) == (
        True,
        "0 test image(s) identical to a train/val image",
    )
    assert leak.metadata == {"leaked": 0, "examples": "none"}


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_class_missing_from_a_split_fails(split):
    """Catches `every_class_in_every_split` passing when a class has no image in one split
    (e.g. `passed=True` hard-coded, or a split left out of the loop)."""
    frame = _manifest()
    frame = frame[~((frame.label == "bibimbap") & (frame.split == split))]
    outcome = check_every_class_in_every_split(frame, CLASSES)
    assert outcome.passed is False
    assert outcome.description == f"missing: bibimbap (no {split})"
    assert outcome.metadata == {"missing": 1}


def test_a_class_of_the_class_map_absent_from_the_manifest_is_missing_everywhere():
    """Catches a check that compares the manifest with itself instead of with the class map."""
    outcome = check_every_class_in_every_split(_manifest(), (*CLASSES, "donuts"))
    assert outcome.passed is False
    assert outcome.description == "missing: donuts (no train), donuts (no val), donuts (no test)"
    assert outcome.metadata == {"missing": 3}


@pytest.mark.parametrize("other", ["val", "test"])
def test_an_image_in_two_splits_fails(other):
    """Catches `no_image_in_two_splits` passing when one path is listed in two splits (e.g. a
    count of rows per path instead of splits per path, or `passed=True`)."""
    frame = _manifest()
    dup = frame.loc[[_row(frame, "churros", "train")]].assign(split=other)
    frame = pd.concat([frame, dup], ignore_index=True)
    outcome = check_no_image_in_two_splits(frame)
    assert outcome.passed is False
    assert outcome.description == "1 image(s) in more than one split"
    assert outcome.metadata == {"images_in_two_splits": 1, "examples": "/img/churros/0.jpg"}


def test_the_same_path_twice_in_one_split_is_not_in_two_splits():
    """Catches a check that counts rows per path instead of distinct splits (a false alarm)."""
    frame = _manifest()
    frame = pd.concat([frame, frame.loc[[_row(frame, "churros", "val")]]], ignore_index=True)
    assert check_no_image_in_two_splits(frame).passed is True


@pytest.mark.parametrize("source_split", ["train", "val"])
def test_identical_content_across_train_and_test_fails(source_split):
    """Catches `no_content_leak_train_test` passing when a test image has the SHA-256 of a
    train or val image under another path (e.g. comparing paths, or leaving val out)."""
    frame = _manifest()
    test_row = _row(frame, "apple_pie", "test")
    frame.loc[test_row, "sha256"] = frame.loc[_row(frame, "churros", source_split), "sha256"]
    outcome = check_no_content_leak(frame)
    assert outcome.passed is False
    assert outcome.description == "1 test image(s) identical to a train/val image"
    assert outcome.metadata == {"leaked": 1, "examples": "/img/apple_pie/4.jpg"}
    # The paths all differ: only the content check sees this leak.
    assert check_no_image_in_two_splits(frame).passed is True


def test_identical_content_within_train_and_val_is_not_a_test_leak():
    """Catches a leak check that flags any duplicate content rather than train/val vs test."""
    frame = _manifest()
    frame.loc[_row(frame, "churros", "val"), "sha256"] = frame.loc[
        _row(frame, "churros", "train"), "sha256"
    ]
    assert check_no_content_leak(frame).passed is True


# --------------------------------------------------------------------------------------------
# accuracy_above_floor with the shipped floors


def _report(source: str, name: str, acc: float, num_classes: int = 10) -> EvaluationReport:
    return EvaluationReport(
        name=name,
        source=source,
        summary={"test/acc_top1": acc, "test/num_classes": float(num_classes)},
        temperature=1.0,
        files={},
    )


def test_the_default_quality_gates_leave_the_shipped_floors_in_force():
    """Catches a default `QualityGates.accuracy` that overrides (e.g. zeroes) the shipped floors."""
    assert QualityGates().accuracy == {}


SAMPLE_FLOORS = [
    (m, f) for m in list_models() if (f := get_model_spec(m).accuracy_floors.get("sample", 0.0)) > 0
]


@pytest.mark.parametrize("model, floor", SAMPLE_FLOORS)
def test_sample_accuracy_at_the_shipped_floor_passes_and_just_below_fails(model, floor):
    """Catches a flipped or strict comparison (`>` instead of `>=`, `<=`), and a check that
    does not read the registry entry's `accuracy_floors` for the sample source."""
    gates = QualityGates()
    at = accuracy_check_result(_report("sample", model, floor), gates)
    assert at.passed is True
    assert at.check_name == ACCURACY_CHECK
    assert at.severity == dg.AssetCheckSeverity.ERROR  # a failure blocks export and comparison
    assert at.metadata["floor"].value == floor
    assert at.description == f"top-1 {floor:.3f} vs floor {floor:.3f} (sample)"
    below = accuracy_check_result(_report("sample", model, math.nextafter(floor, 0.0)), gates)
    assert below.passed is False
    assert below.severity == dg.AssetCheckSeverity.ERROR


def _sample_run_accuracies() -> dict[str, tuple[float, float]]:
    """model -> (top-1, low end of its 95 % interval), read from docs/benchmarks.md's table of
    the `make run` it records, so the figures are the documented run's, never a stale copy."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    section = doc.split("## The main job on the sample", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\w+) \| [^|]+ \| ([\d.]+) % \[([\d.]+), [\d.]+\]", section, re.M)
    return {m: (float(acc) / 100, float(low) / 100) for m, acc, low in rows}


def test_sample_floors_on_measured_figures():
    """The shipped sample floors against the accuracies of the run docs/benchmarks.md records
    (each floor under the low end of its interval: pass) and against chance on 10 classes
    (fail). Catches floors edited to pass everything or nothing, and floors raised above what
    the documented run reached; the figures are parsed from the docs, not copied here."""
    gates = QualityGates()
    measured = _sample_run_accuracies()
    assert {"custom_cnn", "resnet50", "efficientnet_lite0"} <= set(measured), measured
    for model, (acc, low) in measured.items():
        floor = get_model_spec(model).accuracy_floors.get("sample")
        if floor is None:
            continue
        assert floor < low, (model, floor, low)
        assert accuracy_check_result(_report("sample", model, acc), gates).passed is True, model
    for model in ("custom_cnn", "resnet50", "efficientnet_lite0"):
        assert accuracy_check_result(_report("sample", model, 0.10), gates).passed is False, model


@pytest.mark.parametrize(
    "source, model, num_classes, floor",
    [
        ("imagefolder", "custom_cnn", 4, 0.375),  # 1.5 / 4
        ("imagefolder", "custom_cnn", 2, 0.75),
        ("sample", "a_new_model", 4, 0.375),  # a known source without an entry for the model
        ("imagefolder", "custom_cnn", 1, 1.0),  # capped at 1
    ],
)
def test_a_source_without_a_floor_uses_chance_plus_half(source, model, num_classes, floor):
    """Catches the chance-based floor (1.5 / classes) being dropped, mis-computed, or replaced by
    zero (a check that cannot fail)."""
    gates = QualityGates()
    at = accuracy_check_result(_report(source, model, floor, num_classes), gates)
    assert (at.passed, at.metadata["floor"].value) == (True, floor)
    below = math.nextafter(floor, 0.0)
    assert accuracy_check_result(_report(source, model, below, num_classes), gates).passed is False


def test_a_quality_gate_overrides_the_shipped_floor_both_ways():
    """Catches `QualityGates.accuracy` being ignored in favour of the defaults."""
    raised = QualityGates(accuracy={"sample/custom_cnn": 0.9})
    check = accuracy_check_result(_report("sample", "custom_cnn", 0.85), raised)
    assert (check.passed, check.metadata["floor"].value) == (False, 0.9)
    lowered = QualityGates(accuracy={"sample/*": 0.2})
    assert accuracy_check_result(_report("sample", "custom_cnn", 0.3), lowered).passed is True


# --------------------------------------------------------------------------------------------
# gradcam_sanity

SIDE = 32
BOX = (12.0, 12.0, 20.0, 20.0)  # the object: an 8x8 square in the middle of a 32x32 input


def _sanity_metrics(cams: np.ndarray) -> dict[str, float]:
    boxes = np.tile(np.asarray(BOX), (len(cams), 1))
    return {
        "gradcam/pointing_game": pointing_game(cams, boxes),
        "gradcam/pointing_random_expected": pointing_baseline(boxes, SIDE, SIDE),
    }


def test_constant_cams_fail_the_sanity_check():
    """CAMs that ignore the image (all equal: the peak falls on the first pixel, outside the
    object) score 0 against a random baseline of 64/1024. Catches a verdict that passes on a
    tie or on a loss, or a check that is always True."""
    metrics = _sanity_metrics(np.zeros((6, SIDE, SIDE), dtype=np.float32))
    assert metrics == {
        "gradcam/pointing_game": 0.0,
        "gradcam/pointing_random_expected": 64 / 1024,
    }
    result = sanity_check_result(metrics)
    assert result.passed is False
    assert result.check_name == SANITY_CHECK
    assert result.severity == dg.AssetCheckSeverity.WARN
    assert result.description == "pointing game 0.00 vs random 0.06"


def test_cams_that_miss_the_object_fail_and_cams_on_it_pass():
    """Catches a flipped comparison in the pointing-game verdict."""
    miss = np.zeros((6, SIDE, SIDE), dtype=np.float32)
    miss[:, 2, 28] = 1.0  # top-right corner, outside the box
    assert sanity_check_result(_sanity_metrics(miss)).passed is False
    hit = np.zeros((6, SIDE, SIDE), dtype=np.float32)
    hit[:, 15, 15] = 1.0
    on = sanity_check_result(_sanity_metrics(hit))
    assert (on.passed, on.description) == (True, "pointing game 1.00 vs random 0.06")


class _Blind(nn.Module):
    """A classifier that ignores its input: the same logits for every image."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([2.0, 0.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


def test_deletion_cannot_beat_random_when_the_model_ignores_the_image():
    """Without boxes the verdict is the deletion test. A model that ignores the image loses
    nothing from either deletion (0 vs 0): a tie, which must fail. Catches `>=` in the deletion
    verdict."""
    images = torch.randn(4, 3, SIDE, SIDE)
    cams = np.random.default_rng(0).random((4, SIDE, SIDE)).astype(np.float32)
    drop = deletion_test(_Blind(), images, cams, [0, 0, 0, 0])
    assert (drop["cam_drop"], drop["random_drop"]) == (0.0, 0.0)
    metrics = {
        "gradcam/pointing_game": math.nan,  # no boxes (not the sample source)
        "gradcam/pointing_random_expected": math.nan,
        "gradcam/deletion_cam_drop": drop["cam_drop"],
        "gradcam/deletion_random_drop": drop["random_drop"],
    }
    result = sanity_check_result(metrics)
    assert result.passed is False
    assert result.description == "deletion drop 0.000 (CAM region) vs 0.000 (random region)"


def test_the_deletion_verdict_follows_the_figures():
    """Catches a flipped comparison in the deletion verdict."""
    better = {"gradcam/deletion_cam_drop": 0.30, "gradcam/deletion_random_drop": 0.05}
    worse = {"gradcam/deletion_cam_drop": 0.05, "gradcam/deletion_random_drop": 0.30}
    assert check_gradcam_sanity(better).passed is True
    assert check_gradcam_sanity(worse).passed is False


def test_no_sanity_figure_is_not_a_pass():
    """Catches a check that passes when it could compute nothing."""
    for metrics in ({}, {"gradcam/deletion_cam_drop": math.nan}):
        outcome = check_gradcam_sanity(metrics)
        assert outcome.passed is False
        assert outcome.description == "not evaluated: no sanity figure could be computed"


# --------------------------------------------------------------------------------------------
# a check that evaluated nothing


def test_not_evaluated_is_a_warn_failure_never_a_pass():
    """Catches a skipped model's check reporting `passed=True` (the old behaviour), or at ERROR
    severity (which would block `model_comparison`)."""
    result = not_evaluated("model_x was skipped: no weights", check_name=ACCURACY_CHECK)
    assert result.passed is False
    assert result.severity == dg.AssetCheckSeverity.WARN
    assert result.check_name == ACCURACY_CHECK
    assert result.description == "not evaluated: model_x was skipped: no weights"
    assert result.metadata["evaluated"].value is False
