"""The catalog: one rule for "the best model" that `predict` and the demo share, and the
temperature a bundle answers with (its evaluation's calibration, or 1.0, said out loud)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from food_assets import catalog, layout
from food_assets.catalog import MaterializedModel
from food_assets_tests.reference import reference_top_k, spread_logits

CLASSES = ["apple_pie", "pizza", "sushi"]


def _entry(name: str, acc: float | None, *, onnx: bool = False) -> MaterializedModel:
    return MaterializedModel(
        name=name,
        bundle_dir=None if onnx else Path(f"/x/{name}/bundle"),
        onnx_path=Path(f"/x/{name}/model.onnx") if onnx else None,
        metrics={} if acc is None else {"test/acc_top1": acc},
    )


def test_best_model_is_the_highest_test_accuracy_ties_by_name() -> None:
    """The one rule: highest test top-1; unevaluated models after every evaluated one (a NaN
    counts as none); equal accuracies to the name that sorts first, whatever the file kind.

    Breakages tried, each fails: the CLI's former rule (`max` over `(accuracy, has ONNX)`:
    `charlie`, the export, wins the tie); unevaluated models ranked at accuracy 0 rather than
    last (equal to a 0.0 model, `aardvark` wins by name).
    """
    models = [
        _entry("delta", None),
        _entry("charlie", 0.9, onnx=True),
        _entry("bravo", 0.9),
        _entry("alpha", 0.8, onnx=True),
        _entry("zero", 0.0),
        _entry("nan", float("nan")),
    ]
    assert catalog.best_model(models).name == "bravo"
    assert catalog.best_model([_entry("aardvark", None), _entry("zero", 0.0)]).name == "zero"
    assert catalog.best_model([_entry("y", None), _entry("x", None)]).name == "x"
    assert catalog.best_model([]) is None


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny custom_cnn bundle (card temperature 1.7) and its ONNX export."""
    import torch

    from food_assets.ml.data.transforms import Preprocess
    from food_assets.ml.export import export_onnx
    from food_assets.ml.models.bundle import ModelCard, save_bundle
    from food_assets.ml.models.registry import create_model

    root = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    model = create_model("custom_cnn", num_classes=len(CLASSES), weights="none").eval()
    spread_logits(model, 32, seed=0)
    card = ModelCard(
        name="custom_cnn",
        class_names=CLASSES,
        preprocess=Preprocess(input_size=32),
        temperature=1.7,
    )
    return {
        "bundle": save_bundle(root / "bundle", model, card),
        "onnx": export_onnx(model, card, root / "model.onnx"),
    }


def _metrics(root: Path, name: str, acc: float) -> None:
    path = layout.metrics_file(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"test/acc_top1": acc}))


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    arr = np.random.default_rng(0).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "photo.png")
    return tmp_path / "photo.png"


def test_predict_and_the_demo_default_to_the_same_model(
    artifacts, data_dir: Path, photo: Path
) -> None:
    """`food-assets predict` without --model, `food-assets models` and the demo's preselected
    model all name `catalog.best_model`: here `alpha` (a bundle) over `beta` (an export) at the
    same accuracy, over `gamma`'s lower one, and over `delta`, never evaluated, whose card
    claims a higher accuracy.

    Breakages tried, each fails: `predict` back to its former ranking (`max` over accuracy,
    then "has an ONNX export": `beta`); `DemoService.best_model` back to its former rule (the
    card's metrics as a fallback for an unevaluated bundle: `delta`).
    """
    from food_assets.cli import app
    from food_assets.demo import DemoService

    shutil.copytree(artifacts["bundle"], layout.bundle_dir(data_dir, "alpha"))
    shutil.copytree(artifacts["bundle"], layout.bundle_dir(data_dir, "delta"))
    card = json.loads(layout.card_file(data_dir, "delta").read_text())
    card["metrics"] = {"test/acc_top1": 0.99}  # what evaluation used to copy into the card
    layout.card_file(data_dir, "delta").write_text(json.dumps(card))
    for name in ("beta", "gamma"):
        layout.onnx_dir(data_dir, name).mkdir(parents=True)
        shutil.copy(artifacts["onnx"], layout.onnx_file(data_dir, name))
    for name, acc in (("alpha", 0.75), ("beta", 0.75), ("gamma", 0.5)):
        _metrics(data_dir, name, acc)

    assert catalog.best_model(catalog.list_materialized(data_dir)).name == "alpha"
    assert DemoService(data_dir).default_model == "alpha"
    result = CliRunner().invoke(app, ["predict", str(photo), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert str(layout.bundle_dir(data_dir, "alpha")) in result.stderr
    listing = CliRunner().invoke(app, ["models"])
    assert "Default for `predict` and the demo: alpha" in listing.stdout


def test_a_bundle_answers_with_its_evaluations_temperature_or_one(
    artifacts, data_dir: Path, photo: Path
) -> None:
    """Through the catalog, a bundle's probabilities use `evaluation_<name>/calibration.json`;
    with no evaluation, temperature 1.0, and `predict` and the demo say it is uncalibrated.
    The card's own temperature (1.7 here) is used by neither: the evaluation owns calibration.

    Breakage tried: `catalog.load_predictor` not setting the temperature (the card's 1.7
    stays): fails on the first assertion about temperatures and on the probabilities.
    """
    from food_assets.cli import app
    from food_assets.demo import DemoService

    name = "custom_cnn"
    shutil.copytree(artifacts["bundle"], layout.bundle_dir(data_dir, name))

    (entry,) = catalog.list_materialized(data_dir)
    assert entry.temperature == 1.0 and not entry.calibrated
    assert catalog.load_predictor(entry).temperature == 1.0
    cli = CliRunner().invoke(app, ["predict", str(photo), "-m", name, "-k", "3", "-f", "json"])
    assert cli.exit_code == 0, cli.output
    assert "temperature 1.0 (uncalibrated)" in cli.stderr
    assert "evaluation_custom_cnn is not materialized" in cli.stderr
    assert "uncalibrated" in DemoService(data_dir).describe(name)

    calibration = layout.calibration_file(data_dir, name)
    calibration.parent.mkdir(parents=True)
    calibration.write_text(json.dumps(catalog.calibration_record(2.5)))
    (entry,) = catalog.list_materialized(data_dir)
    assert entry.calibrated and catalog.load_predictor(entry).temperature == 2.5
    cli = CliRunner().invoke(app, ["predict", str(photo), "-m", name, "-k", "3", "-f", "json"])
    assert cli.exit_code == 0, cli.output
    assert "temperature 2.5 from evaluation_custom_cnn" in cli.stderr
    (expected,) = reference_top_k(layout.bundle_dir(data_dir, name), [photo], temperature=2.5)
    printed = json.loads(cli.stdout)[0]["top_k"]
    assert [e["label"] for e in printed] == [c for c, _ in expected]
    assert [e["probability"] for e in printed] == pytest.approx([p for _, p in expected], abs=1e-5)
    assert "temperature 2.5" in DemoService(data_dir).describe(name)
