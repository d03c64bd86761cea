"""Content data versions: `food_images_raw` and `food_splits` version what they hold, so new
photos make every downstream model stale, and the same photos leave everything fresh
(`food_assets/ml/data/lineage.py`, ADR 0023)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from food_assets import layout
from food_assets.ml.data.lineage import (
    raw_manifest_digest,
    split_rows_digest,
    splits_digest,
)
from food_assets.ml.data.scan import scan_images
from food_assets.ml.data.sources import list_imagefolder
from food_assets.ml.data.splits import SplitManifest, make_splits
from food_assets.ml.models import get_model_spec
from food_assets.ml.models.registry import FitSkipped
from food_assets_tests.images import noisy_jpeg

CLASSES = ("apple_pie", "bibimbap", "pho")


def _tree(root: Path, per_class: int = 6) -> Path:
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            noisy_jpeg(root / name / f"{i}.jpg", size=(40, 32), seed=100 * c + i)
    return root


def _scan(root: Path) -> pd.DataFrame:
    return scan_images(list_imagefolder(root).files, workers=1).manifest


def test_raw_digest_follows_content_not_location_or_order(tmp_path) -> None:
    """Same images under another folder and in another row order: same digest. One image's
    bytes changed, one added, one relabelled, one removed: each a new digest, all different.

    Breakage tried: absolute paths hashed (the copy case fails); `sha256` left out (the changed
    image keeps the digest); rows not sorted (the shuffled case fails); `label` left out (the
    relabelled case fails)."""
    a = _scan(_tree(tmp_path / "a"))
    b_root = tmp_path / "b"
    shutil.copytree(tmp_path / "a", b_root)
    base = raw_manifest_digest(a, tmp_path / "a")
    assert raw_manifest_digest(_scan(b_root), b_root) == base
    assert raw_manifest_digest(a.sample(frac=1.0, random_state=1), tmp_path / "a") == base

    noisy_jpeg(b_root / "pho" / "0.jpg", size=(40, 32), seed=999)  # same path, new bytes
    changed = raw_manifest_digest(_scan(b_root), b_root)
    noisy_jpeg(b_root / "pho" / "extra.jpg", size=(40, 32), seed=1000)
    added = raw_manifest_digest(_scan(b_root), b_root)
    relabelled = raw_manifest_digest(
        a.assign(label=a["label"].replace("pho", "ramen")), tmp_path / "a"
    )
    removed = raw_manifest_digest(a.iloc[1:], tmp_path / "a")
    assert len({base, changed, added, relabelled, removed}) == 5
    # The file size is part of the manifest and of what is hashed.
    assert (a["bytes"] == [p.stat().st_size for p in map(Path, a["path"])]).all()


def test_splits_digest_follows_inputs_and_config() -> None:
    """The splits' version changes with the raw digest or any config field, and only then.
    Breakage tried: the config left out of `splits_digest` (the seed case fails)."""
    config = {"val_fraction": 0.15, "test_fraction": 0.15, "seed": 0}
    base = splits_digest("r1", config)
    assert splits_digest("r1", dict(reversed(config.items()))) == base
    assert splits_digest("r2", config) != base
    assert splits_digest("r1", {**config, "seed": 1}) != base
    assert splits_digest("r1", {**config, "val_fraction": 0.2}) != base


def test_split_digest_is_the_one_clip_uses_and_differs_per_split(tmp_path) -> None:
    """CLIP's feature-cache key, training's resume key (`SplitManifest.digest`) and the MLflow
    datasets share one digest function; each split has its own. Breakage tried: the split
    filter ignored (train == val)."""
    frame, classes, _ = make_splits(_scan(_tree(tmp_path / "t")), seed=0)
    path = tmp_path / "splits.parquet"
    frame.to_parquet(path)
    splits = SplitManifest(path=path, class_names=classes, source="imagefolder")
    assert splits.digest() == split_rows_digest(frame, classes)
    per_split = {s: splits.digest(s) for s in ("train", "val", "test")}
    assert len(set(per_split.values())) == 3
    assert per_split["val"] == split_rows_digest(frame[frame.split == "val"], classes)


# --- through a real Dagster instance ---------------------------------------------------------


def _skip_fit(spec, splits, config, out_dir, context):
    raise FitSkipped("a test fit that declines (fast)")


PROBE = "lineage_probe"


@pytest.mark.slow
def test_new_images_make_the_models_stale_and_the_same_images_do_not(
    tmp_path, resources, mlflow_isolated
) -> None:
    """Materialize raw, splits and a model into one instance, then rescan: the same images keep
    both data versions and the model FRESH even though both data assets ran again; one added
    image gives a new raw version and STALE splits, and once the splits rematerialize, a new
    splits version and a STALE model (because of new data in `food_splits`). Dagster 1.13 judges
    staleness one edge at a time: the model turns stale when the splits it read change, not
    while only their parent has. A changed split seed versions the splits, not the images.

    Breakage tried: `data_version=` dropped from `food_images_raw` (Dagster's default version
    stays the same after the new image); dropped from `food_splits` (Dagster's default, from
    the code version and the input versions, ignores the seed: the seed case fails); the
    splits' version from the config alone (the model stays FRESH after new images)."""
    from dagster._core.definitions.data_version import (
        CachingStaleStatusResolver,
        StaleCauseCategory,
        StaleStatus,
        extract_data_version_from_entry,
    )
    from dagster._core.loader import LoadingContextForTest

    from food_assets.defs.assets.data import food_images_raw, food_splits
    from food_assets.defs.assets.models import build_model_asset

    root = _tree(tmp_path / "tree")
    spec = dataclasses.replace(get_model_spec("custom_cnn"), name=PROBE, fit=_skip_fit)
    assets = [food_images_raw, food_splits, build_model_asset(spec)]
    instance = dg.DagsterInstance.ephemeral()
    raw_key, splits_key = dg.AssetKey("food_images_raw"), dg.AssetKey("food_splits")
    model_key = dg.AssetKey(layout.model_asset(PROBE))

    def run(selection, seed: int = 0) -> None:
        ops = {
            "food_images_raw": {"config": {"source": "imagefolder", "root": str(root)}},
            "food_splits": {"config": {"seed": seed}},
        }
        ops = {k: v for k, v in ops.items() if dg.AssetKey(k) in selection}
        result = dg.materialize(
            assets,
            selection=selection,
            resources=resources,
            run_config={"ops": ops},
            instance=instance,
        )
        assert result.success

    def version(key: dg.AssetKey) -> str:
        record = instance.get_latest_data_version_record(key)
        return extract_data_version_from_entry(record.event_log_entry).value

    def status(key: dg.AssetKey):
        # What the UI asks: the asset graph of the code against the instance.
        graph = dg.Definitions(assets=assets, resources=resources).resolve_asset_graph()
        resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
        return resolver.get_status(key), resolver.get_stale_causes(key)

    run([raw_key, splits_key, model_key])
    first = version(raw_key), version(splits_key)
    assert status(model_key)[0] == StaleStatus.FRESH

    run([raw_key, splits_key])  # a rescan of the same images, and the splits again
    assert (version(raw_key), version(splits_key)) == first
    assert status(splits_key)[0] == StaleStatus.FRESH
    assert status(model_key)[0] == StaleStatus.FRESH

    noisy_jpeg(root / "pho" / "new.jpg", size=(40, 32), seed=4242)  # one new photo
    run([raw_key])
    assert version(raw_key) != first[0]
    assert status(splits_key)[0] == StaleStatus.STALE

    run([splits_key])
    assert version(splits_key) != first[1]
    stale, causes = status(model_key)
    assert stale == StaleStatus.STALE
    assert any(
        c.category == StaleCauseCategory.DATA and c.dependency.asset_key == splits_key
        for c in causes
    ), causes

    new_raw, new_splits = version(raw_key), version(splits_key)
    run([splits_key], seed=1)  # another split seed: the splits change, the images do not
    assert version(raw_key) == new_raw and version(splits_key) != new_splits
    run([splits_key], seed=0)  # and back: the version it had
    assert version(splits_key) == new_splits
