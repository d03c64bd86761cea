"""Storage has one owner: `layout` builds every path, the IO manager stores values as JSON
records with root-relative paths, and a remote root (S3 on loopback, moto) publishes and fetches
asset folders through one local copy."""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from food_assets import layout
from food_assets.defs.assets._common import Skipped
from food_assets.defs.assets.data import RawImages
from food_assets.defs.assets.evaluation import EvaluationReport
from food_assets.defs.io_manager import AssetValueIOManager, decode_value, encode_value
from food_assets.storage import ArtifactStorage, StoredValueError
from food_assets_tests.s3 import moto_s3, s3_env

PACKAGE = Path(__file__).resolve().parents[1] / "food_assets"


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(s3_endpoint, monkeypatch) -> str:
    return s3_env(monkeypatch, s3_endpoint)


# -- layout --------------------------------------------------------------------------------------

#: Path building that belongs in `food_assets.layout` (the wiring layer: not food_assets/ml,
#: whose functions write the files inside a folder they are given).
HAND_BUILT = [
    re.compile(r"""["']artifacts["']"""),
    re.compile(r"""/\s*f["'](model|onnx|evaluation|gradcam)_\{"""),
    re.compile(r"""storage_directory\("""),  # Dagster's pickles: not a place to read values
]


def test_no_path_is_built_by_hand_outside_layout() -> None:
    """Every `<root>/artifacts/<asset>/...` path comes from `food_assets.layout`.

    Breakage tried: `_latency_ms` in assets/evaluation.py back to
    `store.root / "artifacts" / f"onnx_{name}" / "latency.json"`, and the CLI's reuse test back
    to `Path(instance.storage_directory(), *key.path)`: each is listed here and fails.
    """
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "layout.py" or rel.startswith("ml/"):
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if any(p.search(code) for p in HAND_BUILT):
                offenders.append(f"food_assets/{rel}:{lineno}: {line.strip()}")
    assert not offenders, "build these paths with food_assets.layout:\n" + "\n".join(offenders)


def test_layout_is_the_same_on_local_and_remote_roots() -> None:
    """One function gives the remote location and its local copy (`upath` joins like `Path`).

    Breakage tried: `model_name_of` returning a name for `leaderboard` (the catalog would list
    a model that is not one): fails.
    """
    from upath import UPath

    local = Path("/data")
    remote = UPath("s3://bucket/prefix")
    assert str(layout.bundle_dir(local, "custom_cnn")) == "/data/artifacts/model_custom_cnn/bundle"
    assert str(layout.onnx_file(remote, "x")) == "s3://bucket/prefix/artifacts/onnx_x/model.onnx"
    assert layout.calibration_file(local, "x").parent == layout.evaluation_dir(local, "x")
    assert str(layout.record_file(remote, "food_splits")).endswith("food_splits/value.json")
    assert layout.model_name_of("onnx_efficientnet_b0") == "efficientnet_b0"
    assert layout.model_name_of("leaderboard") is None
    assert layout.model_name_of("food_splits") is None
    assert layout.remote_cache_root(local, "s3://bucket/a/b") == Path(
        "/data/artifact_cache/s3/bucket/a/b"
    )
    with pytest.raises(ValueError):
        layout.asset_dir(local, "../elsewhere")


# -- records ---------------------------------------------------------------------------------------


def _strict_json(text: str):
    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_values_round_trip_as_json_with_root_relative_paths(tmp_path: Path) -> None:
    """A value written under one root reads back under another (a moved folder, another
    machine): paths inside the root are stored relative to it, NaN and tuples survive, and the
    record is standard JSON.

    Breakage tried, each fails: every path stored absolute (`{"$abspath": ...}` for all); tuples
    stored as lists (class names come back as a list); NaN written as a bare `NaN` token.
    """
    first = ArtifactStorage(tmp_path / "one")
    folder = first.local_dir("evaluation_m")
    folder.mkdir(parents=True)
    (folder / "calibration.json").write_text('{"temperature": 1.5}')
    report = EvaluationReport(
        name="m",
        source="sample",
        summary={"test/acc_top1": 0.75, "test/ece": float("nan")},
        temperature=1.5,
        files={"calibration": folder / "calibration.json"},
        model_metadata={"params": np.int64(12), 3: ("a", "b"), "$odd": Skipped("m", "why")},
    )
    raw = RawImages(
        source="imagefolder",
        root=tmp_path / "photos",  # outside the root: kept absolute
        manifest_path=first.local_dir("food_images_raw") / "manifest.parquet",
        quarantine_path=first.local_dir("food_images_raw") / "quarantine.parquet",
        num_images=3,
        num_quarantined=0,
    )
    first.commit("evaluation_m", encode_value(report, first, "evaluation_m"))
    record_text = layout.record_file(first.local, "evaluation_m").read_text()
    record = _strict_json(record_text)
    assert str(tmp_path) not in record_text
    assert record["value"]["fields"]["files"] == {
        "calibration": {"$path": "artifacts/evaluation_m/calibration.json"}
    }
    assert record["files"] == {"calibration.json": len('{"temperature": 1.5}')}
    encoded_raw = encode_value(raw, first, "food_images_raw")
    assert encoded_raw["fields"]["root"] == {"$abspath": str(tmp_path / "photos")}

    shutil.move(tmp_path / "one", tmp_path / "two")
    second = ArtifactStorage(tmp_path / "two")
    back = decode_value(second.read_record("evaluation_m")["value"], second, "evaluation_m")
    assert isinstance(back, EvaluationReport)
    assert back.files["calibration"] == second.local_dir("evaluation_m") / "calibration.json"
    assert back.files["calibration"].is_file()
    assert back.summary["test/acc_top1"] == 0.75 and math.isnan(back.summary["test/ece"])
    assert back.model_metadata == {"params": 12, 3: ("a", "b"), "$odd": Skipped("m", "why")}
    raw_back = decode_value(encoded_raw, second, "food_images_raw")
    assert raw_back.root == tmp_path / "photos"
    assert raw_back.manifest_path == second.local_dir("food_images_raw") / "manifest.parquet"


@dataclass
class Marker:
    """Not a food_assets type: building it has a side effect a record must never trigger."""

    path: str

    def __post_init__(self) -> None:
        Path(self.path).write_text("constructed")


def test_a_record_only_builds_food_assets_dataclasses(tmp_path: Path) -> None:
    """Loading a record builds nothing but food_assets dataclasses from their fields; a record
    naming another class (here one whose constructor writes a file) is refused, and so is
    storing one.

    Breakage tried: the `TRUSTED_PACKAGE` prefix check removed from `_Decoder._dataclass`: the
    marker file appears and the test fails.
    """
    storage = ArtifactStorage(tmp_path / "root")
    marker = tmp_path / "marker"
    for tag in (f"{__name__}:Marker", "os:system", "food_assets.storage:ArtifactStorage"):
        data = {"$type": tag, "fields": {"path": str(marker)}}
        with pytest.raises(StoredValueError):
            decode_value(data, storage, "x")
    assert not marker.exists()
    with pytest.raises(TypeError, match="food_assets only"):
        encode_value(Marker(str(tmp_path / "other")), storage, "x")
    with pytest.raises(TypeError, match="cannot store a set"):
        encode_value({1, 2}, storage, "x")


#: `model_custom_cnn`'s record as written before the Dagster code moved to `food_assets/defs/`
#: (ADR 0026): its types name `food_assets.assets.*`.
OLD_LAYOUT_RECORD = """{
  "asset": "model_custom_cnn",
  "files": {"bundle/card.json": 2},
  "format": "food_assets/asset-value@1",
  "value": {
    "$type": "food_assets.assets.models:TrainedModel",
    "fields": {
      "bundle_dir": {"$path": "artifacts/model_custom_cnn/bundle"},
      "class_names": {"$tuple": ["apple_pie", "pizza"]},
      "family": "cnn",
      "metadata": {"skipped": {"$type": "food_assets.assets._common:Skipped",
                               "fields": {"name": "cnn", "reason": "old"}}},
      "mlflow_run_id": null,
      "name": "custom_cnn",
      "source": "sample"
    }
  },
  "version": "0123456789abcdef",
  "written_at": "2026-11-30T12:00:00Z"
}
"""


def test_an_artifact_root_written_by_the_old_layout_still_loads(tmp_path: Path) -> None:
    """A `value.json` naming `food_assets.assets.models:TrainedModel` (the module before the
    move to `food_assets/defs/`) loads through the IO manager as today's `TrainedModel`, nested
    records included, with its path resolved under the root.

    Breakage tried: `RENAMED_MODULES` emptied (or the lookup dropped from `_dataclass`): the
    load fails with "does not define; materialize model_custom_cnn again"."""
    from food_assets.defs.assets.models import TrainedModel
    from food_assets.defs.resources import ArtifactStore

    root = tmp_path / "root"
    record = layout.record_file(root, "model_custom_cnn")
    (record.parent / "bundle").mkdir(parents=True)
    (record.parent / "bundle" / "card.json").write_text("{}")
    record.write_text(OLD_LAYOUT_RECORD)
    manager = AssetValueIOManager(artifact_store=ArtifactStore(data_dir=str(root)))
    value = manager.load_input(dg.build_input_context(asset_key=dg.AssetKey("model_custom_cnn")))
    assert isinstance(value, TrainedModel)
    assert value.class_names == ("apple_pie", "pizza")
    assert value.bundle_dir == (root / "artifacts" / "model_custom_cnn" / "bundle").resolve()
    assert value.metadata["skipped"] == Skipped(name="cnn", reason="old")


def test_dagster_values_are_records_not_pickles(tmp_path: Path, small_sample_config) -> None:
    """The code location's IO manager stores `food_images_raw` and `food_splits` as JSON
    records in their own folders; nothing lands in Dagster's storage folder, which a later run
    does not need: `food_splits` alone loads its input from the record.

    Breakage tried: `io_manager` dropped from `default_resources()` (Dagster's default pickling
    IO manager comes back): fails on the pickles in the storage folder.
    """
    from food_assets.definitions import default_resources
    from food_assets.defs.assets import data

    resources = default_resources(str(tmp_path / "data"))
    (tmp_path / "home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "home"))
    assets = [data.food_images_raw, data.food_splits]
    first = dg.materialize(
        assets, resources=resources, instance=instance, run_config={"ops": small_sample_config}
    )
    assert first.success
    storage = Path(instance.storage_directory())
    root = tmp_path / "data"
    for asset in ("food_images_raw", "food_splits"):
        assert not (storage / asset).exists()  # where Dagster's default IO manager pickles
        record = _strict_json(layout.record_file(root, asset).read_text())
        assert record["asset"] == asset
        meta = first.asset_materializations_for_node(asset)[0].metadata
        assert meta["path"].value == str(layout.record_file(root, asset))
    shutil.rmtree(storage, ignore_errors=True)
    again = dg.materialize(
        assets, selection=["food_splits"], resources=resources, instance=instance
    )
    assert again.success
    splits = again.output_for_node("food_splits")
    assert splits.path == layout.splits_file(root) and len(splits.frame()) == 64
    assert isinstance(resources["io_manager"], AssetValueIOManager)


def test_a_dataframe_value_is_stored_as_parquet_next_to_its_record(tmp_path: Path) -> None:
    """model_comparison's kind of value (a DataFrame) is a Parquet file in the asset's folder,
    named by the record.

    Breakage tried: `_is_frame` always False (a DataFrame is refused as unknown): fails.
    """
    from food_assets.defs.resources import ArtifactStore

    table = pd.DataFrame({"model": ["a", "b"], "acc_top1": [0.5, float("nan")]})

    @dg.asset
    def comparison_like() -> pd.DataFrame:
        return table

    @dg.asset
    def reader(comparison_like: pd.DataFrame) -> int:
        return len(comparison_like)

    store = ArtifactStore.configure_at_launch(data_dir=str(tmp_path))
    result = dg.materialize(
        [comparison_like, reader],
        resources={
            "artifact_store": store,
            "io_manager": AssetValueIOManager(artifact_store=store),
        },
    )
    assert result.success and result.output_for_node("reader") == 2
    record = _strict_json(layout.record_file(tmp_path, "comparison_like").read_text())
    assert record["value"] == {"$frame": "artifacts/comparison_like/value.parquet"}
    pd.testing.assert_frame_equal(
        pd.read_parquet(layout.frame_file(tmp_path, "comparison_like")), table
    )


# -- a remote root (S3 API on loopback) ------------------------------------------------------------


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_remote_root_publishes_then_fetches_only_what_is_missing(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`commit` uploads the asset folder (hidden temporaries excluded), removes files of the
    previous version, then writes the record; `fetch` on another machine downloads the files
    the record lists (only those under a prefix when asked), nothing more the second time, and
    drops files of an older version from its cache.

    Breakages tried, each fails: no removal of the previous version's files in `_upload` (the
    old checkpoint stays in the bucket); the version comparison in `fetch` dropped (everything
    is downloaded again on the second fetch); the hidden-name filter removed from
    `local_files` (the temporary travels).
    """
    import s3fs

    url = f"{bucket}/team/food"
    writer = ArtifactStorage(url, data_dir=tmp_path / "writer")
    assert writer.is_remote and writer.local == layout.remote_cache_root(
        (tmp_path / "writer").resolve(), url
    )
    folder = writer.local_dir("model_m")
    _write(folder / "bundle" / "card.json", b'{"name": "m"}')
    _write(folder / "bundle" / "model.safetensors", b"w" * 100)
    _write(folder / "checkpoints" / "last.ckpt", b"c" * 50)
    _write(folder / ".bundle.tmp-1234" / "card.json", b"half")
    _write(folder / "bundle" / ".card.json.tmp-5678", b"half")
    record = writer.commit("model_m", {"$path": "artifacts/model_m/bundle"})

    fs = s3fs.S3FileSystem()
    base = url.removeprefix("s3://") + "/artifacts/model_m"
    fs.invalidate_cache()
    assert sorted(p.removeprefix(base + "/") for p in fs.find(base)) == [
        "bundle/card.json",
        "bundle/model.safetensors",
        "checkpoints/last.ckpt",
        "value.json",
    ]
    assert writer.list_assets() == ["model_m"]

    reader = ArtifactStorage(url, data_dir=tmp_path / "reader")
    assert reader.read_record("model_m")["version"] == record["version"]
    downloads: list[str] = []
    real_get = reader.remote.fs.get_file

    def counting_get(rpath, lpath, *args, **kwargs):
        downloads.append(rpath.rsplit("/artifacts/", 1)[-1])
        return real_get(rpath, lpath, *args, **kwargs)

    monkeypatch.setattr(reader.remote.fs, "get_file", counting_get)
    local = reader.fetch("model_m", prefix="bundle")
    assert sorted(downloads) == ["model_m/bundle/card.json", "model_m/bundle/model.safetensors"]
    assert (local / "bundle" / "card.json").read_bytes() == b'{"name": "m"}'
    assert not (local / "checkpoints").exists()
    downloads.clear()
    reader.fetch("model_m", prefix="bundle")
    assert downloads == []
    reader.fetch("model_m")
    assert downloads == ["model_m/checkpoints/last.ckpt"]

    # A new version without the checkpoint: gone from the bucket and from the reader's cache.
    shutil.rmtree(folder / "checkpoints")
    _write(folder / "bundle" / "card.json", b'{"name": "m", "v": 2}')
    writer.commit("model_m", None)
    fs.invalidate_cache()
    assert not fs.exists(f"{base}/checkpoints/last.ckpt")
    downloads.clear()
    reader.fetch("model_m")
    assert sorted(downloads) == ["model_m/bundle/card.json", "model_m/bundle/model.safetensors"]
    assert not (local / "checkpoints").exists()
    assert (local / "bundle" / "card.json").read_bytes() == b'{"name": "m", "v": 2}'

    with pytest.raises(StoredValueError, match="materialize onnx_m first"):
        reader.fetch("onnx_m")
    assert reader.read_text("model_m", "bundle/card.json") == '{"name": "m", "v": 2}'
    assert reader.read_text("model_m", "nope.json") is None


def test_team_run_config_puts_values_and_folders_in_the_bucket(
    tmp_path: Path, bucket: str, small_sample_config
) -> None:
    """configs/team/artifacts_s3.yaml, with only its bucket swapped for the loopback one, sends
    both the asset folders and the IO manager's records to the bucket: run config reaches the
    IO manager through the shared `artifact_store` resource.

    Breakage tried: `default_resources()` giving the IO manager its own `ArtifactStore(...)`
    instead of the shared one configured at launch: the records stay on the local disk and this
    test fails.
    """
    import s3fs
    import yaml

    from food_assets.definitions import default_resources
    from food_assets.defs.assets import data

    team = Path(__file__).resolve().parents[1] / "configs" / "team" / "artifacts_s3.yaml"
    run_config = yaml.safe_load(team.read_text())
    store_config = run_config["resources"]["artifact_store"]["config"]
    assert store_config["artifact_root"].startswith("s3://")
    store_config["artifact_root"] = f"{bucket}/team"
    resources = default_resources(str(tmp_path / "data"))
    result = dg.materialize(
        [data.food_images_raw, data.food_splits],
        resources=resources,
        run_config={**run_config, "ops": small_sample_config},
    )
    assert result.success
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    base = f"{bucket.removeprefix('s3://')}/team/artifacts"
    for asset, files in (
        ("food_images_raw", {"manifest.parquet", "quarantine.parquet"}),
        ("food_splits", {"splits.parquet", "class_map.json"}),
    ):
        found = {p.rsplit("/", 1)[-1] for p in fs.find(f"{base}/{asset}")}
        assert found == files | {"value.json"}
    assert not layout.artifacts_dir(tmp_path / "data").exists()
