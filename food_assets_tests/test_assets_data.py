"""End to end: materialize the real data assets and their checks in process."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from food_assets.defs.assets import data
from food_assets.defs.resources import QualityGates
from food_assets_tests.images import write_bad_files
from food_assets_tests.test_data import make_fake_food101

DATA_ASSETS = [
    data.food_images_raw,
    data.food_splits,
    data.quarantine_share_under_limit,
    data.every_class_in_every_split,
    data.no_image_in_two_splits,
    data.no_content_leak_train_test,
]


DATA_CHECKS = (
    "quarantine_share_under_limit",
    "every_class_in_every_split",
    "no_image_in_two_splits",
    "no_content_leak_train_test",
)


def _run(resources, run_config, **kw):
    return dg.materialize(DATA_ASSETS, resources=resources, run_config={"ops": run_config}, **kw)


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_sample_source_materializes_with_checks(resources, small_sample_config, data_dir):
    result = _run(resources, small_sample_config)
    assert result.success
    assert _checks(result) == {
        "quarantine_share_under_limit": True,
        "every_class_in_every_split": True,
        "no_image_in_two_splits": True,
        "no_content_leak_train_test": True,
    }
    splits = result.output_for_node("food_splits")
    frame = splits.frame()
    assert len(splits.class_names) == 4 and len(frame) == 64
    assert frame[["box_x0", "box_y1"]].notna().all().all()
    meta = result.asset_materializations_for_node("food_splits")[0].metadata
    assert meta["num_train"].value + meta["num_val"].value + meta["num_test"].value == 64
    assert (data_dir / "artifacts" / "food_splits" / "class_map.json").is_file()
    # Same config again: identical splits.
    again = _run(resources, small_sample_config).output_for_node("food_splits").frame()
    pd.testing.assert_frame_equal(frame, again)


def test_bad_files_are_quarantined_and_the_gate_blocks_splits(tmp_path, resources):
    expected = write_bad_files(tmp_path / "tree")
    config = {
        "food_images_raw": {
            "config": {
                "source": "imagefolder",
                "root": str(tmp_path / "tree"),
                "max_pixels": 1_000_000,
            }
        }
    }
    result = _run(resources, config, raise_on_error=False)
    raw = result.output_for_node("food_images_raw")
    quarantine = pd.read_parquet(raw.quarantine_path)
    want = {n: r for n, r in expected.items() if r != "ok"}
    assert (
        dict(zip(quarantine.path.map(lambda p: Path(p).name), quarantine.reason, strict=True))
        == want
    )
    manifest = raw.manifest()
    assert not set(manifest.path) & set(quarantine.path)  # never reach training
    meta = result.asset_materializations_for_node("food_images_raw")[0].metadata
    assert "decompression bomb" in meta["quarantine"].value
    assert meta["hidden_files_skipped"].value == 2
    # 8 of 21 files are bad: over the 5 % default, so the blocking check stops the splits.
    assert _checks(result)["quarantine_share_under_limit"] is False
    assert not result.asset_materializations_for_node("food_splits")

    relaxed = {**resources, "quality": QualityGates(max_quarantine_share=0.5)}
    # Two classes ("good" with 6, "odd" with 7 usable) are enough to split.
    result = _run(relaxed, config)
    assert result.success and _checks(result)["quarantine_share_under_limit"] is True


def test_food101_official_test_split_is_kept(tmp_path, resources):
    make_fake_food101(tmp_path / "f101")
    config = {"food_images_raw": {"config": {"source": "food101", "root": str(tmp_path / "f101")}}}
    result = _run(resources, config)
    # Every data check ran and passed (`all()` of no checks at all was True).
    # Breakage tried: the checks left out of the run; this now fails.
    assert result.success and _checks(result) == dict.fromkeys(DATA_CHECKS, True)
    frame = result.output_for_node("food_splits").frame()
    test_ids = set(frame.loc[frame.split == "test", "path"].map(lambda p: Path(p).stem))
    official = (tmp_path / "f101" / "food-101" / "meta" / "test.txt").read_text().split()
    assert test_ids == {line.split("/")[1] for line in official}


@pytest.mark.parametrize(
    "config, message",
    [
        ({"source": "imagefolder", "root": "/does/not/exist"}, "does not exist"),
        ({"source": "imagefolder"}, "needs `root`"),
        ({"source": "food101", "root": "/does/not/exist"}, "no Food-101 copy"),
    ],
)
def test_wrong_root_is_one_clear_failure(resources, config, message):
    result = _run(resources, {"food_images_raw": {"config": config}}, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    err = failure.step_failure_data.error
    assert message in err.message
    assert err.cls_name == "Failure"  # a user failure, not an unexpected exception


def test_bad_config_values_are_named(resources):
    # Out-of-range values fail the step with pydantic's message naming the field and the bound.
    result = _run(
        resources, {"food_splits": {"config": {"val_fraction": 2.0}}}, raise_on_error=False
    )
    failure = next(e for e in result.all_events if e.is_step_failure)
    text = str(failure.step_failure_data.error.to_string())
    assert "val_fraction" in text and "less than 1" in text
    # Unknown keys and wrong types are refused before anything runs.
    with pytest.raises(dg.DagsterInvalidConfigError, match="colour"):
        _run(resources, {"food_images_raw": {"config": {"colour": "red"}}})


@pytest.mark.slow
def test_a_food101_shaped_tree_of_2000_images_through_the_data_assets(tmp_path, resources):
    """A generated Food-101-shaped tree (20 classes x 100 JPEGs, torchvision's layout) through
    a real materialization of `food_images_raw` and `food_splits` with `source: food101`: every
    file scanned with its header size, the official test split kept (25 per class), val carved
    from the official train rows (15 %), every data check passing.

    Breakage caught: the food101 listing reading one split only (1,500 or 500 images), the
    official test split not kept (about 15 % of each class instead of 25 %), the scan's reduced
    JPEG decode leaking into the manifest sizes (12x9 for 96x72 files).
    """
    from benchmarks.synthetic_food101 import make_food101_like

    make_food101_like(tmp_path / "f101", classes=20, per_class=100, image_size=(96, 72))
    config = {
        "food_images_raw": {
            "config": {"source": "food101", "root": str(tmp_path / "f101"), "scan_workers": 2}
        }
    }
    result = _run(resources, config)
    assert result.success and _checks(result) == dict.fromkeys(DATA_CHECKS, True)
    raw = result.output_for_node("food_images_raw")
    assert (raw.num_images, raw.num_quarantined) == (2000, 0)
    manifest = raw.manifest()
    sizes = set(zip(manifest["width"], manifest["height"], strict=True))
    assert sizes == {(96, 72), (72, 96), (96, 96)}
    frame = result.output_for_node("food_splits").frame()
    counts = frame.groupby(["label", "split"]).size().unstack()
    assert len(counts) == 20
    assert (counts["test"] == 25).all() and (counts["val"] == 11).all()
    assert (counts["train"] == 64).all()
    official = (tmp_path / "f101" / "food-101" / "meta" / "test.txt").read_text().split()
    test_ids = frame.loc[frame["split"] == "test", "path"].map(lambda p: Path(p).stem)
    assert set(test_ids) == {line.split("/")[1] for line in official}
