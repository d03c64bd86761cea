"""The artifact root on an object store, end to end: the real asset graph against an S3 API on
loopback (moto's server), three "machines" that share nothing but the bucket (and, as a team
shares a tracking server and an image volume, the MLflow store and the source images)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from food_assets import catalog, layout
from food_assets.storage import ARTIFACT_ROOT_ENV
from food_assets_tests.s3 import moto_s3, s3_env

pytestmark = pytest.mark.slow

MODEL = "custom_cnn"


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_s3() as endpoint:
        yield endpoint


def _resources(data_dir: Path, mlflow_dir: Path) -> dict:
    from food_assets.definitions import default_resources
    from food_assets.defs.resources import QualityGates, food_mlflow

    resources = default_resources(str(data_dir))
    # One epoch at 32 px is near chance: the gate has tests of its own.
    resources["quality"] = QualityGates(accuracy={"sample/*": 0.0})
    resources["mlflow"] = food_mlflow.configured(
        {"experiment_name": "food_assets", "mlflow_tracking_uri": f"sqlite:///{mlflow_dir}/db"}
    )
    return resources


def _materialize(resources: dict, selection: list[str], instance, run_config: dict):
    from food_assets.definitions import build_definitions

    defs = build_definitions(resources)
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=selection,
        resources=resources,
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def _bucket_files(root: str, asset: str) -> dict[str, str]:
    """Relative path -> ETag of every object of an asset's folder in the bucket."""
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    base = f"{root.removeprefix('s3://')}/artifacts/{asset}"
    return {p.removeprefix(base + "/"): i["ETag"] for p, i in fs.find(base, detail=True).items()}


def test_graph_on_s3_then_predict_on_a_fresh_machine(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, mlflow_isolated
) -> None:
    """Machine one materializes food_images_raw, food_splits and model_custom_cnn with the
    artifact root on `s3://...`; its local copy is then deleted. Machine two materializes
    evaluation_custom_cnn and onnx_custom_cnn from what it fetches. Both local copies are then
    deleted, and `food-assets predict` on machine three (a fresh data folder) reads the export
    from the bucket and gives machine two's answers.

    Breakages tried, each fails this test: `fetch` made a no-op for remote roots (machine two
    finds no bundle); `commit` not uploading (nothing but the record in the bucket);
    `onnx_<name>` exporting with the card's temperature (1.0, not the calibration's);
    `catalog.fetch_model` a no-op (`predict` finds nothing in machine three's copy).
    """
    from typer.testing import CliRunner

    from food_assets.cli import app
    from food_assets.ml.export.onnx_export import load_onnx
    from food_assets.ml.inference.predictor import OnnxPredictor

    root = f"{s3_env(monkeypatch, s3_endpoint)}/team/food"
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, root)
    one, two, three = tmp_path / "one", tmp_path / "two", tmp_path / "three"
    mlflow_dir = tmp_path / "mlflow"  # a team's tracking server
    mlflow_dir.mkdir()
    instance = dg.DagsterInstance.ephemeral()
    run_config = {
        "ops": {
            "food_images_raw": {
                "config": {
                    "sample_num_classes": 3,
                    "sample_images_per_class": 12,
                    "sample_image_size": 48,
                    "root": str(tmp_path / "images"),  # a shared image volume
                }
            },
            f"model_{MODEL}": {"config": {"epochs": 1, "image_size": 32, "batch_size": 8}},
            f"evaluation_{MODEL}": {"config": {"n_bootstrap": 100}},
            f"onnx_{MODEL}": {"config": {"parity_images": 8, "measure_latency": False}},
        }
    }

    # Machine one: data and model, published to the bucket.
    first = _materialize(
        _resources(one, mlflow_dir),
        ["food_images_raw", "food_splits", f"model_{MODEL}"],
        instance,
        {"ops": {k: v for k, v in run_config["ops"].items() if not k.startswith(("ev", "on"))}},
    )
    model_objects = _bucket_files(root, f"model_{MODEL}")
    assert {"value.json", "bundle/card.json", "bundle/model.safetensors"} <= set(model_objects)
    for asset in ("food_images_raw", "food_splits"):
        assert "value.json" in _bucket_files(root, asset)
    meta = first.asset_materializations_for_node("food_splits")[0].metadata
    assert meta["splits"].value == f"{root}/artifacts/food_splits/splits.parquet"
    shutil.rmtree(layout.remote_cache_root(one.resolve(), root))

    # Machine two: evaluation and export, from what it fetches.
    _materialize(
        _resources(two, mlflow_dir),
        [f"evaluation_{MODEL}", f"onnx_{MODEL}"],
        instance,
        {"ops": {k: v for k, v in run_config["ops"].items() if k.startswith(("ev", "on"))}},
    )
    cache_two = layout.remote_cache_root(two.resolve(), root)
    assert (layout.card_file(cache_two, MODEL)).is_file()
    # Only what the model's value points at (its bundle) was fetched, not its checkpoints.
    assert sorted(p.name for p in layout.model_dir(cache_two, MODEL).iterdir()) == [
        "bundle",
        "value.json",
    ]
    # Nothing wrote into the model's folder in the bucket; the temperature lives in the
    # evaluation's. (A write into machine two's local copy of the bundle would not show here:
    # the next fetch restores the published version. test_assets_downstream.py checks the card.)
    assert _bucket_files(root, f"model_{MODEL}") == model_objects
    calibration = json.loads(
        catalog.open_storage(three).read_text(f"evaluation_{MODEL}", "calibration.json")
    )
    _, onnx_meta = load_onnx(layout.onnx_file(cache_two, MODEL))
    assert onnx_meta.temperature == pytest.approx(calibration["temperature"])
    assert calibration["temperature"] != 1.0

    rng = np.random.default_rng(3)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        arr = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
        Image.fromarray(arr).save(photos / f"p{i}.png")
    expected = {
        Path(r.path).name: r.top_k
        for r in OnnxPredictor(layout.onnx_file(cache_two, MODEL)).predict_paths(
            sorted(photos.iterdir()), top_k=3
        )
    }
    shutil.rmtree(one)
    shutil.rmtree(two)

    # Machine three: nothing local but the photos.
    result = CliRunner().invoke(
        app, ["--data-dir", str(three), "predict", str(photos), "-k", "3", "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    assert f"{root}/artifacts/onnx_{MODEL}/model.onnx" in result.stderr
    printed = {Path(i["path"]).name: i["top_k"] for i in json.loads(result.stdout)}
    assert set(printed) == set(expected)
    for name, top in expected.items():
        assert [e["label"] for e in printed[name]] == [c for c, _ in top]
        assert [e["probability"] for e in printed[name]] == pytest.approx([p for _, p in top])
    cache_three = layout.remote_cache_root(three.resolve(), root)
    assert sorted(p.name for p in layout.artifacts_dir(cache_three).iterdir() if p.is_dir()) == [
        f"onnx_{MODEL}"
    ]
    best = catalog.best_model(catalog.list_materialized(three))
    assert best is not None and best.name == MODEL and best.calibrated
    assert best.temperature == pytest.approx(calibration["temperature"])
