"""Every data-asset config field reaches the `ml` call: a non-default value changes the result,
and the metadata reports the value that was used (never the default, never another field's).

Real Dagster materializations of `food_images_raw` and `food_splits` on the embedded sample
source. Self-contained: the assets and resources by their public names.
"""

from __future__ import annotations

import dagster as dg
import pytest

from food_assets.definitions import default_resources
from food_assets.defs.assets import data

ASSETS = [data.food_images_raw, data.food_splits]
BASE = {"sample_num_classes": 3, "sample_images_per_class": 12, "sample_image_size": 48}


def _run(tmp_path, name: str, raw: dict | None = None, splits: dict | None = None):
    """Materialize both data assets into their own data folder; (result, raw md, splits md)."""
    import os

    folder = tmp_path / name
    folder.mkdir()
    old = os.environ.get("FOOD_ASSETS_DATA_DIR")
    os.environ["FOOD_ASSETS_DATA_DIR"] = str(folder)
    try:
        config = {"food_images_raw": {"config": {**BASE, **(raw or {})}}}
        if splits:
            config["food_splits"] = {"config": splits}
        result = dg.materialize(ASSETS, resources=default_resources(), run_config={"ops": config})
    finally:
        if old is None:
            os.environ.pop("FOOD_ASSETS_DATA_DIR")
        else:
            os.environ["FOOD_ASSETS_DATA_DIR"] = old
    assert result.success

    def md(node):
        meta = result.asset_materializations_for_node(node)[0].metadata
        return {k: getattr(v, "value", v) for k, v in meta.items()}

    return result, md("food_images_raw"), md("food_splits")


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("cfg"), "default")


def test_each_sample_setting_changes_the_images_and_is_reported(default, tmp_path) -> None:
    """One field at a time, against the same base run. Breakage seen failing: `seed=0` instead
    of `config.sample_seed` in the asset's SampleSpec; the metadata's `sample_seed` taken from
    the split config; `image_size` left at its default."""
    base_result, base_raw, _ = default
    base = base_result.output_for_node("food_images_raw").manifest()
    assert (base_raw["sample_seed"], base_raw["sample_num_classes"]) == (0, 3)
    assert (base_raw["sample_images_per_class"], base_raw["sample_image_size"]) == (12, 48)
    assert base_raw["num_images"] == 36 and base_raw["num_classes"] == 3

    result, raw, _ = _run(tmp_path, "seed", {"sample_seed": 7})
    images = result.output_for_node("food_images_raw").manifest()
    assert raw["sample_seed"] == 7
    assert not set(images["sha256"]) & set(base["sha256"])  # other pixels, every image

    result, raw, _ = _run(tmp_path, "shape", {"sample_num_classes": 4,
                                               "sample_images_per_class": 9,
                                               "sample_image_size": 40})  # fmt: skip
    images = result.output_for_node("food_images_raw").manifest()
    assert (raw["sample_num_classes"], raw["sample_images_per_class"]) == (4, 9)
    assert raw["sample_image_size"] == 40 and raw["num_images"] == 36 == len(images)
    assert images.groupby("label").size().tolist() == [9] * 4
    assert set(zip(images["width"], images["height"], strict=True)) == {(40, 40)}


@pytest.mark.parametrize("limit", [48 * 48, 48 * 48 - 1])
def test_max_pixels_at_the_image_size_and_one_under(tmp_path, limit) -> None:
    """48x48 images: a limit of exactly 2304 px keeps every one (and the metadata reports the
    limit used); 2303 quarantines every one, which fails the asset with a one-line reason.
    Breakage seen failing: `w * h >= max_pixels`, the asset passing DEFAULT_MAX_PIXELS instead
    of `config.max_pixels`."""
    import os

    folder = tmp_path / "data"
    folder.mkdir()
    os.environ["FOOD_ASSETS_DATA_DIR"] = str(folder)
    try:
        result = dg.materialize(
            [data.food_images_raw],
            resources=default_resources(),
            run_config={"ops": {"food_images_raw": {"config": {**BASE, "max_pixels": limit}}}},
            raise_on_error=False,
        )
    finally:
        os.environ.pop("FOOD_ASSETS_DATA_DIR")
    if limit == 48 * 48:
        assert result.success
        meta = result.asset_materializations_for_node("food_images_raw")[0].metadata
        assert (meta["max_pixels"].value, meta["num_quarantined"].value) == (limit, 0)
    else:
        assert not result.success
        failure = result.get_step_failure_events()[0].step_failure_data.error
        assert "none of the 36 files" in failure.message


def test_each_split_setting_changes_the_split_and_is_reported(default, tmp_path) -> None:
    """val/test fractions and the seed, each alone; expected counts worked out by hand from
    "round(fraction * n) per class, at least one" (12 images a class, 3 classes). Breakage seen
    failing: the asset passing `test_fraction=config.val_fraction`, the seed not passed
    (`seed=0`), the metadata reporting the default fractions."""
    _, _, base = default
    assert (base["num_val"], base["num_test"], base["num_train"]) == (6, 6, 24)  # 2+2 a class
    assert (base["val_fraction"], base["test_fraction"], base["seed"]) == (0.15, 0.15, 0)
    base_frame = default[0].output_for_node("food_splits").frame()

    _, _, val = _run(tmp_path, "val", splits={"val_fraction": 0.25})
    assert (val["num_val"], val["num_test"], val["num_train"]) == (9, 6, 21)  # 3 + 2 a class
    assert (val["val_fraction"], val["test_fraction"]) == (0.25, 0.15)

    _, _, test = _run(tmp_path, "test", splits={"test_fraction": 0.34})
    assert (test["num_val"], test["num_test"], test["num_train"]) == (6, 12, 18)  # 2 + 4
    assert (test["val_fraction"], test["test_fraction"]) == (0.15, 0.34)

    result, _, seeded = _run(tmp_path, "seed", splits={"seed": 7})
    assert seeded["seed"] == 7
    frame = result.output_for_node("food_splits").frame()
    # Same images (the sample seed did not change), other assignment, same counts.
    assert set(frame["sha256"]) == set(base_frame["sha256"])
    by_sha = dict(zip(base_frame["sha256"], base_frame["split"], strict=True))
    assert any(by_sha[s] != split for s, split in zip(frame["sha256"], frame["split"],
                                                      strict=True))  # fmt: skip
    assert (seeded["num_val"], seeded["num_test"]) == (6, 6)
