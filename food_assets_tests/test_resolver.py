"""The one resolver of a model reference and the one default-model rule (`food_assets.resolver`).

`predict` with no `--model`, `predict --model champion`, the demo's preselected model and the
line `food-assets models` prints all name the champion: the best model that passed its accuracy
floor, never a more accurate one that failed it. With no champion the fallback is said out loud.
The kind of an artifact given by path is what the artifact records, not its file name.

Real pieces: a real MLflow SQLite store with logged runs, registered versions and the alias
set by the champion rule (`tracking.choose_champion`), real bundles, the real CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from food_assets import layout, resolver
from food_assets.ml.errors import CheckpointError
from food_assets.storage import RECORD_FORMAT
from food_assets.tracking import model_registry
from food_assets.tracking import runs as tracking
from food_assets_tests.reference import spread_logits

CLASSES = ["apple_pie", "pizza", "sushi", "tacos"]
#: (test accuracy, accuracy floor) per model: alpha is the most accurate and fails its floor,
#: beta passes and beats gamma, which passes too.
MODELS = {"alpha": (0.90, 0.95), "beta": (0.70, 0.50), "gamma": (0.60, 0.50)}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny bundle per model, each with other weights (so their answers differ)."""
    import torch

    from food_assets.ml.data.transforms import Preprocess
    from food_assets.ml.models.bundle import ModelCard, save_bundle
    from food_assets.ml.models.registry import create_model

    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for seed, name in enumerate(MODELS):
        torch.manual_seed(seed)
        model = create_model("custom_cnn", num_classes=len(CLASSES), weights="none").eval()
        spread_logits(model, 32, seed=seed)
        # The card names the registry entry that rebuilds the network.
        card = ModelCard(
            name="custom_cnn", class_names=CLASSES, preprocess=Preprocess(input_size=32)
        )
        out[name] = save_bundle(root / name, model, card)
    return out


def _record(data_dir: Path, name: str, run_id: str) -> None:
    """`model_<name>`'s value record as the IO manager writes it (only what the resolver reads
    matters: the MLflow run the model was logged in)."""
    path = layout.record_file(data_dir, layout.model_asset(name))
    value = {
        "$type": "food_assets.defs.assets.models:TrainedModel",
        "fields": {"mlflow_run_id": run_id},
    }
    path.write_text(json.dumps({"format": RECORD_FORMAT, "value": value}))


def _registry(data_dir: Path, bundles: dict[str, Path]) -> dict[str, str]:
    """Each model logged in its own run and registered as version 1; the alias set by the
    champion rule over the accuracies and floors of MODELS. Returns the run id per model."""
    uri = f"sqlite:///{layout.mlflow_dir(data_dir) / 'mlflow.db'}"
    layout.mlflow_dir(data_dir).mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment(
        "food_assets", artifact_location=(data_dir / "mlartifacts").as_uri()
    )
    runs, candidates = {}, []
    for name, (acc, floor) in MODELS.items():
        run = client.create_run(experiment)
        client.log_artifacts(
            run.info.run_id, str(bundles[name]), model_registry.BUNDLE_ARTIFACT_PATH
        )
        client.set_terminated(run.info.run_id)
        registered = model_registry.registered_model_name(name)
        client.create_registered_model(registered)
        client.create_model_version(
            registered, f"runs:/{run.info.run_id}/bundle", run_id=run.info.run_id
        )
        runs[name] = run.info.run_id
        candidates.append(tracking.Candidate(name, acc, floor, acc >= floor, 1))
    champion = tracking.choose_champion(candidates)
    assert champion is not None and champion.model == "beta"
    client.set_registered_model_alias(
        model_registry.registered_model_name(champion.model), model_registry.CHAMPION, "1"
    )
    return runs


def _materialize(data_dir: Path, bundles: dict[str, Path], runs: dict[str, str]) -> None:
    """Each model's bundle, value record and test accuracy under the artifact root."""
    for name, (acc, _) in MODELS.items():
        shutil.copytree(bundles[name], layout.bundle_dir(data_dir, name))
        _record(data_dir, name, runs.get(name, "another-run"))
        metrics = layout.metrics_file(data_dir, name)
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(json.dumps({"test/acc_top1": acc}))


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        arr = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"p{i}.png")
    return folder


def _predict(data_dir: Path, photos: Path, *extra: str):
    from food_assets.cli import app

    result = CliRunner().invoke(
        app, ["--data-dir", str(data_dir), "predict", str(photos), "-f", "json", *extra]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    return [(r["top_k"][0]["label"], r["top_k"][0]["probability"]) for r in rows], result.stderr


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FOOD_ASSETS_MLFLOW_URI", "FOOD_ASSETS_ARTIFACT_ROOT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.slow  # three CLI predictions on real bundles: ~10 s
def test_the_default_is_the_champion_not_the_most_accurate_model(
    bundles, data_dir: Path, photos: Path, clean_env
) -> None:
    """alpha is the most accurate and fails its floor; beta is the champion. `predict` with no
    `--model`, `--model champion`, the demo and `models` all say beta, and the first two answer
    the same, from beta's local bundle (the registered version is that very run).

    Breakages tried, each fails: the default back to `catalog.best_model` (alpha: other
    answers, no `default: champion` line); the champion rule without the floor (alpha again)."""
    from food_assets.cli import app
    from food_assets.demo import DemoService

    runs = _registry(data_dir, bundles)
    _materialize(data_dir, bundles, runs)
    default, default_err = _predict(data_dir, photos)
    champion, champion_err = _predict(data_dir, photos, "--model", "champion")
    alpha, _ = _predict(data_dir, photos, "--model", "alpha")
    assert [label for label, _ in default] == [label for label, _ in champion]
    assert [p for _, p in default] == pytest.approx([p for _, p in champion], abs=1e-6)
    assert default != alpha  # the most accurate model answers otherwise
    assert "default: champion models:/food_assets.beta@champion (version 1)" in default_err
    assert str(layout.bundle_dir(data_dir, "beta")) in default_err  # the local copy answers
    assert "models:/food_assets.beta@champion: version 1" in champion_err
    assert DemoService(data_dir).default_model == "beta"
    listing = CliRunner().invoke(app, ["--data-dir", str(data_dir), "models"])
    assert "Default for `predict` and the demo: beta (champion" in listing.stdout


@pytest.mark.slow  # three CLI predictions on real bundles: ~10 s
def test_a_local_model_of_another_version_is_not_served_as_the_champion(
    bundles, data_dir: Path, photos: Path, clean_env
) -> None:
    """beta retrained since the leaderboard (its local value names another MLflow run): the
    default serves the champion's registered bundle, and says so. Breakage tried: serving the
    local entry by name alone (stderr then names the local bundle folder)."""
    runs = _registry(data_dir, bundles)
    _materialize(data_dir, bundles, {k: v for k, v in runs.items() if k != "beta"})
    default, stderr = _predict(data_dir, photos)
    champion, _ = _predict(data_dir, photos, "--model", "champion")
    assert default == champion
    assert "is another version, so its registered bundle answers" in stderr
    assert str(layout.bundle_dir(data_dir, "beta")) not in stderr


@pytest.mark.slow  # three CLI predictions on real bundles: ~10 s
def test_without_a_champion_the_fallback_is_said_out_loud(
    bundles, data_dir: Path, photos: Path, clean_env
) -> None:
    """No MLflow store: the most accurate materialized model (alpha), with a `default:
    fallback` line naming why. Breakage tried: the fallback silent (no such line)."""
    _materialize(data_dir, bundles, {})
    default, stderr = _predict(data_dir, photos)
    alpha, _ = _predict(data_dir, photos, "--model", "alpha")
    assert default == alpha
    assert "default: fallback: no champion (no MLflow store at" in stderr
    assert "the most accurate materialized model, alpha, whose accuracy floor was not" in stderr
    assert not (layout.mlflow_dir(data_dir) / "mlflow.db").exists()  # nothing created by asking


def test_a_path_is_what_the_artifact_records_not_its_suffix(bundles, tmp_path: Path) -> None:
    """A bundle folder named `x.onnx` is a bundle; an ONNX export named `model.bin` is an ONNX
    export; an `.onnx` file that is a JPEG is neither, and a folder with neither a card nor an
    export neither. Breakage tried: the former suffix test (`.onnx` -> ONNX): the first two
    resolve the wrong way."""
    from food_assets.ml.export import export_onnx
    from food_assets.ml.models.bundle import load_bundle

    odd_bundle = shutil.copytree(bundles["beta"], tmp_path / "x.onnx")
    assert resolver.entry_for_path(odd_bundle).bundle_dir == odd_bundle.resolve()
    model, card = load_bundle(bundles["beta"])
    export = export_onnx(model, card, tmp_path / "model.bin")
    entry = resolver.entry_for_path(export)
    assert entry.onnx_path == export.resolve() and entry.bundle_dir is None
    (tmp_path / "photos_only").mkdir()
    fake = tmp_path / "fake.onnx"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(fake, format="JPEG")
    with pytest.raises(CheckpointError, match="is neither a readable ONNX file"):
        resolver.entry_for_path(fake)
    with pytest.raises(CheckpointError, match="neither an .onnx file nor a model bundle"):
        resolver.entry_for_path(tmp_path / "photos_only")
