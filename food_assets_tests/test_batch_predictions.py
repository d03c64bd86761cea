"""`batch_predictions` (one partition per drop), its `new_drops` sensor and its WARN check, with
real Dagster materializations, real Parquet files and a real ONNX model.

Each test's docstring names the breakage tried on purpose (and seen failing) when it was
written.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from food_assets.defs.assets.batch import (
    BATCH_ASSET,
    DROPS,
    LOW_CONFIDENCE_CHECK,
    batch_predictions,
    new_drops,
)
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.inference.batch import list_drops, score_drop
from food_assets.ml.inference.predictor import load_predictor
from food_assets_tests.served import png_bytes
from food_assets_tests.tiny_onnx import tiny_onnx

CLASSES = ("apple_pie", "pizza", "sushi")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logits = 4 x normalized channel means: pure red, green, blue images are confident
    (p > 0.99); mid-grey ones a near three-way tie (p ~ 1/3)."""
    root = tmp_path_factory.mktemp("batch_model")
    w = 4 * np.eye(3, dtype=np.float32)
    pre = Preprocess(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return tiny_onnx(root / "model.onnx", w, class_names=CLASSES, preprocess=pre)


def _drop(folder: Path, colours: list[tuple[int, int, int]], *, bad: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "nested").mkdir()
    for i, c in enumerate(colours):
        where = folder / "nested" if i == 0 else folder
        Image.new("RGB", (40, 30), c).save(where / f"img{i}.png")
    if bad:
        (folder / "empty.jpg").write_bytes(b"")
        (folder / "broken.png").write_bytes(png_bytes(0)[:80])
        (folder / "notes.jpg").write_text("not a photo")
        Image.new("RGB", (8, 8)).save(folder / ".hidden.png")
    return folder


RED, GREEN, BLUE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128)


def test_score_drop_predicts_readable_files_and_lists_the_rest(model, tmp_path):
    """Relative paths, top-1 label and probability, top-k, and each unreadable file with its
    reason; hidden files skipped. Breakage tried: paths kept absolute (the `path` column
    differs) and unreadable files dropped silently (3 missing rows)."""
    folder = _drop(tmp_path / "d1", [RED, GREEN, BLUE])
    scored = score_drop(load_predictor(model), folder, model_version="7", top_k=2)
    got = scored.predictions.set_index("path")
    assert list(got.index) == ["img1.png", "img2.png", "nested/img0.png"]
    assert list(got["label"]) == ["pizza", "sushi", "apple_pie"]
    assert all(
        len(t) == 2 and t[0]["label"] == lbl
        for t, lbl in zip(got["top_k"], got["label"], strict=True)
    )
    assert set(got["model_version"]) == {"7"} and set(got["model"]) == {"tiny"}
    reasons = dict(zip(scored.unreadable["path"], scored.unreadable["reason"], strict=True))
    assert reasons == {
        "broken.png": "truncated or corrupt",
        "empty.jpg": "empty file",
        "notes.jpg": "not an image",
    }


def test_low_confidence_share_counts_strictly_under_the_threshold():
    """Breakage tried: `<=` for `<` (the row at exactly 0.5 counts: 2/3, not 1/3)."""
    from food_assets.ml.inference.batch import ScoredDrop

    frame = pd.DataFrame({"probability": [0.2, 0.5, 0.9]})
    scored = ScoredDrop(frame, pd.DataFrame())
    assert scored.low_confidence_share(0.5) == pytest.approx(1 / 3)
    assert scored.low_confidence_share(0.95) == 1.0
    assert ScoredDrop(frame.iloc[:0], pd.DataFrame()).low_confidence_share(0.5) is None


def test_list_drops_takes_sub_folders_with_partition_safe_names(tmp_path):
    """Breakage tried: listing files too (`loose.jpg` becomes a drop)."""
    for name in ("2026-12-03", "b_drop", ".hidden", "has space"):
        (tmp_path / name).mkdir()
    (tmp_path / "loose.jpg").write_bytes(b"x")
    assert list_drops(tmp_path) == ["2026-12-03", "b_drop"]
    assert list_drops(tmp_path / "absent") == []


def _materialize(instance, data_dir: Path, drop: str, **config):
    from food_assets.definitions import default_resources

    resources = default_resources(str(data_dir))
    return dg.materialize(
        [batch_predictions],
        partition_key=drop,
        instance=instance,
        resources={k: resources[k] for k in ("artifact_store", "io_manager")},
        run_config={"ops": {BATCH_ASSET: {"config": config}}},
        raise_on_error=False,
    )


@pytest.mark.slow
def test_a_drop_materializes_to_parquet_with_metadata_and_a_warn_check(model, tmp_path):
    """A real partitioned materialization: the Parquet file, row count and schema metadata, the
    unreadable files listed, the run a success despite them; the check passes on a confident
    drop and WARNs (run still a success) on a drop of three-way ties. Breakage tried: the check
    `passed=share < max` turned around (`>`: the confident drop fails) and the severity left
    at ERROR (the grey drop's run fails)."""
    data = tmp_path / "data"
    drops = tmp_path / "drops"
    _drop(drops / "confident", [RED, GREEN, BLUE])
    _drop(drops / "unsure", [GREY, GREY], bad=False)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(DROPS.name, ["confident", "unsure"])
    common = {"source": str(drops), "model": str(model)}
    ok = _materialize(instance, data, "confident", **common)
    assert ok.success
    mat = ok.asset_materializations_for_node(BATCH_ASSET)[-1]
    assert mat.partition == "confident"
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    assert meta["dagster/row_count"] == 3 and meta["unreadable_files"] == 3
    cols = [c.name for c in meta["dagster/column_schema"].columns]
    assert cols == ["path", "label", "probability", "top_k", "model", "model_version"]
    assert "truncated or corrupt" in meta["unreadable"]
    parquet = data / "artifacts" / BATCH_ASSET / "confident" / "predictions.parquet"
    table = pd.read_parquet(parquet)
    assert sorted(table["label"]) == sorted(CLASSES)
    assert len(pd.read_parquet(parquet.with_name("unreadable.parquet"))) == 3
    (check,) = ok.get_asset_check_evaluations()
    assert check.check_name == LOW_CONFIDENCE_CHECK and check.passed

    unsure = _materialize(instance, data, "unsure", **common)
    assert unsure.success
    (check,) = unsure.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["low_confidence_share"].value == 1.0
    assert parquet.is_file()  # the other partition's file is still there


def test_the_sensor_adds_one_partition_and_one_run_per_new_drop(tmp_path, monkeypatch):
    """First tick: both drops become partitions with a run each; once added, nothing; a third
    folder: one more. Breakage tried: not filtering known partitions (the second tick asks for
    both again)."""
    monkeypatch.setenv("FOOD_ASSETS_DROPS_DIR", str(tmp_path))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    instance = dg.DagsterInstance.ephemeral()

    def tick() -> dg.SensorResult:
        result = new_drops(dg.build_sensor_context(instance=instance))
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(DROPS.name, list(request.partition_keys))
        return result

    first = tick()
    assert [r.partition_key for r in first.run_requests] == ["a", "b"]
    assert tick().run_requests == []
    (tmp_path / "c").mkdir()
    assert [r.partition_key for r in tick().run_requests] == ["c"]
    assert instance.get_dynamic_partitions(DROPS.name) == ["a", "b", "c"]


@pytest.mark.slow
def test_drops_on_an_object_store_prefix(model, tmp_path, monkeypatch):
    """A drops prefix on S3 (moto on loopback): the sensor lists its sub-prefixes and the asset
    scores a drop copied into the local cache. Breakage tried: `local_drop` returning the
    remote path unchanged (the folder check fails the run)."""
    import s3fs

    from food_assets_tests.s3 import moto_s3, s3_env

    with moto_s3() as endpoint:
        bucket = s3_env(monkeypatch, endpoint)
        local = _drop(tmp_path / "up" / "d1", [RED, BLUE])
        fs = s3fs.S3FileSystem()
        for path in sorted(local.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                fs.put_file(str(path), f"{bucket}/incoming/d1/{path.relative_to(local)}")
        source = f"{bucket}/incoming"
        monkeypatch.setenv("FOOD_ASSETS_DROPS_DIR", source)
        instance = dg.DagsterInstance.ephemeral()
        result = new_drops(dg.build_sensor_context(instance=instance))
        assert [r.partition_key for r in result.run_requests] == ["d1"]
        instance.add_dynamic_partitions(DROPS.name, ["d1"])
        run = _materialize(instance, tmp_path / "data", "d1", model=str(model))
        assert run.success
        meta = run.asset_materializations_for_node(BATCH_ASSET)[-1].metadata
        assert meta["dagster/row_count"].value == 2 and meta["unreadable_files"].value == 3
        assert meta["source"].value == f"{source}/d1"
