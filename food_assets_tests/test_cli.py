"""`food-assets`: help, predict on real exports and bundles, models, and train/evaluate through a
real Dagster instance."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from food_assets.cli import app
from food_assets_tests.reference import (
    assert_reference_discriminates,
    assert_top_k_matches,
    reference_top_k,
    spread_logits,
)

CLASSES = ["apple_pie", "pizza", "sushi"]
COMMANDS = ["predict", "models", "train", "evaluate", "export", "demo"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny custom_cnn bundle (random weights, 3 classes, 32 px, temperature 1.7) and its ONNX
    export."""
    import torch

    from food_assets.ml.data.transforms import Preprocess
    from food_assets.ml.export import export_onnx
    from food_assets.ml.models.bundle import ModelCard, save_bundle
    from food_assets.ml.models.registry import create_model

    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = create_model("custom_cnn", num_classes=len(CLASSES), weights="none").eval()
    # Fresh, it gives 1/3 to every class (or, with noisy weights, 1.0 to one class for every
    # image); spread the logits over a few units so ranks and the temperature both show.
    spread_logits(model, 32, seed=0)
    card = ModelCard(
        name="custom_cnn",
        class_names=CLASSES,
        preprocess=Preprocess(input_size=32),
        temperature=1.7,
    )
    bundle = save_bundle(root / "bundle", model, card)
    onnx_file = export_onnx(model, card, root / "model.onnx")
    return {"bundle": bundle, "onnx": onnx_file}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three good images (one nested), a corrupt JPEG, and hidden/non-image files to skip."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    for name in ("b.jpg", "a.png", "sub/c.jpg"):
        arr = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / name)
    (root / "broken.jpg").write_bytes((root / "b.jpg").read_bytes()[:60])
    Image.new("RGB", (8, 8)).save(root / ".hidden.png")
    (root / "notes.txt").write_text("not an image")
    return root


GOOD = {"a.png", "b.jpg", "c.jpg"}


def test_import_is_light() -> None:
    """`food-assets --help` stays fast: importing the CLI loads no torch, Dagster or timm."""
    code = (
        "import sys, food_assets.cli; "
        "print(','.join(m for m in ('torch', 'dagster', 'timm', 'open_clip') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(runner: CliRunner, command: str | None) -> None:
    args = [command, "--help"] if command else ["--help"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    if command is None:
        for name in COMMANDS:
            assert name in result.output


@pytest.mark.parametrize("kind", ["onnx", "bundle"])
def test_predict_json(runner: CliRunner, exported, photos: Path, kind: str) -> None:
    result = runner.invoke(
        app, ["predict", str(photos), "--from", str(exported[kind]), "-k", "2", "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)  # stdout holds the JSON only; notes are on stderr
    assert [Path(i["path"]).name for i in items] == ["a.png", "b.jpg", "broken.jpg", "c.jpg"]
    by_name = {Path(i["path"]).name: i for i in items}
    for name in GOOD:
        item = by_name[name]
        probs = [e["probability"] for e in item["top_k"]]
        assert item["error"] is None and len(probs) == 2
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert all(e["label"] in CLASSES for e in item["top_k"])
        assert item["label"] == item["top_k"][0]["label"]
    bad = by_name["broken.jpg"]
    assert bad["error"] and bad["top_k"] == [] and bad["label"] is None
    assert "broken.jpg" in result.stderr and "predicted 3 of 4" in result.stderr


def test_predict_csv_and_table_agree(runner: CliRunner, exported, photos: Path) -> None:
    """CSV (long format) parses back; the table shows the same top-1 classes."""
    args = ["predict", str(photos), "--from", str(exported["onnx"]), "-k", "3"]
    result = runner.invoke(app, [*args, "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    per_file: dict[str, list[dict]] = {}
    for row in rows:
        per_file.setdefault(Path(row["path"]).name, []).append(row)
    assert set(per_file) == GOOD | {"broken.jpg"}
    assert per_file["broken.jpg"][0]["error"] and per_file["broken.jpg"][0]["label"] == ""
    for name in GOOD:
        ranks = per_file[name]
        assert [int(r["rank"]) for r in ranks] == [1, 2, 3]
        probs = [float(r["probability"]) for r in ranks]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
        assert sorted(r["label"] for r in ranks) == CLASSES  # k = all classes here

    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    for name in GOOD:
        assert name in table.stdout
    assert per_file["a.png"][0]["label"] in table.stdout


def _parse_predictions(fmt: str, stdout: str) -> dict[str, list[tuple[str, float]]]:
    """File name -> [(class, probability), ...] as `predict` printed them, in printed order."""
    out: dict[str, list[tuple[str, float]]] = {}
    if fmt == "json":
        for item in json.loads(stdout):
            top = [(e["label"], e["probability"]) for e in item["top_k"]]
            # The top-level fields repeat the first entry.
            assert (item["label"], item["probability"]) == top[0]
            out[Path(item["path"]).name] = top
    elif fmt == "csv":
        for row in csv.DictReader(io.StringIO(stdout)):
            top = out.setdefault(Path(row["path"]).name, [])
            assert int(row["rank"]) == len(top) + 1
            top.append((row["label"], float(row["probability"])))
    else:  # the rich table: a file's name on its first row, empty on the next ranks
        name = None
        for line in stdout.splitlines():
            cells = [c.strip() for c in line.split("│")[1:-1]]
            if len(cells) != 4 or not cells[1].isdigit():
                continue
            name = Path(cells[0]).name if cells[0] else name
            top = out.setdefault(name, [])
            assert int(cells[1]) == len(top) + 1
            top.append((cells[2], float(cells[3])))
    return out


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
@pytest.mark.parametrize("kind", ["onnx", "bundle"])
def test_predict_reports_the_models_own_top_k(
    runner: CliRunner, exported, photos: Path, kind: str, fmt: str
) -> None:
    """Every printed class and probability is the bundle's own softmax(logits / T), ranked.

    The expected answer comes from `load_bundle` and eager PyTorch, not from the predictor.
    Breakages tried, each fails this test: class names reversed in `Predictor._setup`
    (`tuple(class_names)[::-1]`); the temperature ignored there; results ranked ascending in
    `predict_paths`; the JSON writer's probabilities shifted by one rank (the json cases).
    """
    files = [photos / "a.png", photos / "b.jpg", photos / "sub" / "c.jpg"]
    expected = reference_top_k(exported["bundle"], files)
    assert_reference_discriminates(exported["bundle"], files, expected)
    result = runner.invoke(
        app,
        ["predict", *map(str, files), "--from", str(exported[kind]), "-k", "3", "-f", fmt],
    )
    assert result.exit_code == 0, result.output
    printed = _parse_predictions(fmt, result.stdout)
    assert list(printed) == [f.name for f in files]
    tol = 5e-5 + 1e-6 if fmt == "table" else 1e-5  # the table rounds to 4 decimals
    for f, top in zip(files, expected, strict=True):
        assert_top_k_matches(printed[f.name], top, tol=tol)


def test_predict_bad_file_line_on_stderr(runner: CliRunner, exported, photos: Path) -> None:
    """Naming files explicitly: the unreadable ones get a line each, the good one a result."""
    result = runner.invoke(
        app,
        ["predict", str(photos / "a.png"), str(photos / "notes.txt"), str(photos / "broken.jpg")]
        + ["--from", str(exported["bundle"]), "-f", "json"],
    )
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2
    assert any("notes.txt" in w for w in warnings) and any("broken.jpg" in w for w in warnings)
    assert sum(i["error"] is None for i in json.loads(result.stdout)) == 1


def test_predict_nothing_readable_fails(runner: CliRunner, exported, photos: Path) -> None:
    result = runner.invoke(
        app, ["predict", str(photos / "broken.jpg"), "--from", str(exported["onnx"])]
    )
    assert result.exit_code == 1
    assert "predicted 0 of 1" in result.stderr


def test_predict_user_errors(runner: CliRunner, exported, photos: Path, data_dir: Path) -> None:
    """Missing path, missing model, unknown model: one clear line, exit 2, no traceback."""
    cases = {
        ("predict", str(photos / "nope.jpg"), "--from", str(exported["onnx"])): "does not exist",
        ("predict", str(photos), "--from", str(photos / "none.onnx")): "does not exist",
        ("predict", str(photos), "--model", "custom_cnn"): "food-assets train custom_cnn",
        ("predict", str(photos), "--model", "nonesuch"): "food-assets models",
        ("predict", str(photos)): "no materialized model",
        ("predict", str(photos), "-m", "custom_cnn", "--from", "x.onnx"): "not both",
        ("predict", str(photos / "sub" / "missing")): "does not exist",
    }
    for args, expected in cases.items():
        result = runner.invoke(app, list(args))
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error: "), (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output


def test_predict_by_model_name_uses_catalog(
    runner: CliRunner, exported, photos: Path, data_dir: Path
) -> None:
    """--model and the no-option default find the ONNX export where `onnx_<name>` writes it."""
    import shutil

    from food_assets import catalog

    target = catalog.onnx_path("custom_cnn", data_dir)
    target.parent.mkdir(parents=True)
    shutil.copy(exported["onnx"], target)
    for extra in (["--model", "custom_cnn"], []):
        result = runner.invoke(app, ["predict", str(photos / "a.png"), "-f", "json", *extra])
        assert result.exit_code == 0, result.output
        assert str(target) in result.stderr
        assert json.loads(result.stdout)[0]["error"] is None
    # --data-dir elsewhere: nothing materialized there.
    other = runner.invoke(
        app, ["--data-dir", str(data_dir / "elsewhere"), "predict", str(photos), "-m", "custom_cnn"]
    )
    assert other.exit_code == 2 and "no materialized model 'custom_cnn'" in other.stderr


def test_models_lists_registry_and_materialized(
    runner: CliRunner, exported, data_dir: Path
) -> None:
    import shutil

    from food_assets import catalog
    from food_assets.ml.models.registry import list_models

    shutil.copytree(exported["bundle"], catalog.bundle_path("custom_cnn", data_dir))
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for name in list_models():
        assert name in result.stdout
    row = next(ln for ln in result.stdout.splitlines() if "custom_cnn" in ln)
    assert "scratch" in row and "yes" in row


def test_unknown_model_for_dagster_commands(runner: CliRunner, data_dir: Path) -> None:
    for command in ("train", "evaluate", "export"):
        result = runner.invoke(app, [command, "nonesuch"])
        assert result.exit_code == 2, result.output
        assert "unknown model 'nonesuch'" in result.stderr
        assert "food-assets models" in result.stderr


def test_bad_config_file_is_a_user_error(
    runner: CliRunner, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    missing = runner.invoke(app, ["train", "custom_cnn", "--config", str(tmp_path / "no.yaml")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    result = runner.invoke(app, ["train", "custom_cnn", "--config", str(bad)])
    assert result.exit_code == 2 and "must hold a mapping" in result.stderr


def test_demo_without_gradio_is_explained(runner: CliRunner, monkeypatch) -> None:
    """With gradio absent (simulated), `demo` names the extra instead of a traceback."""
    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` fail
    monkeypatch.delitem(sys.modules, "food_assets.demo", raising=False)
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr
    assert "demo" in result.stderr and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# Through Dagster, against a persistent instance in a temporary DAGSTER_HOME


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh persistent instance; the accuracy gate off, since one epoch on 36 images is near
    chance and the blocking accuracy check would fail the evaluation run (the gate has tests of
    its own)."""
    import food_assets.definitions as defs
    import food_assets.defs.resources as res

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    real = defs.default_resources

    def no_gate(data_dir: str | None = None) -> dict:
        resources = real(data_dir)
        resources["quality"] = res.QualityGates(accuracy={"sample/*": 0.0})
        return resources

    monkeypatch.setattr(defs, "default_resources", no_gate)
    return home


@pytest.mark.slow
def test_train_then_evaluate_reuses_the_model(
    runner: CliRunner, data_dir: Path, dagster_home: Path, tmp_path: Path, photos: Path
) -> None:
    import dagster as dg

    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "ops": {
                    "food_images_raw": {
                        "config": {
                            "sample_num_classes": 3,
                            "sample_images_per_class": 12,
                            "sample_image_size": 64,
                        }
                    },
                    "evaluation_custom_cnn": {"config": {"n_bootstrap": 100}},
                }
            }
        )
    )
    train = runner.invoke(
        app,
        ["train", "custom_cnn", "--epochs", "1", "--image-size", "32", "--batch-size", "8"]
        + ["--config", str(config)],
    )
    assert train.exit_code == 0, train.output
    bundle = data_dir / "artifacts" / "model_custom_cnn" / "bundle"
    assert (bundle / "card.json").is_file() and (bundle / "model.safetensors").is_file()
    assert "run id:" in train.stdout and str(bundle.parent) in train.stdout

    key = dg.AssetKey("model_custom_cnn")
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].is_success
        assert runs[0].run_id in train.stdout
        assert len(instance.fetch_materializations(key, limit=10).records) == 1

    evaluate = runner.invoke(app, ["evaluate", "custom_cnn", "--config", str(config)])
    assert evaluate.exit_code == 0, evaluate.output
    assert "reusing food_images_raw, food_splits, model_custom_cnn" in evaluate.stderr
    assert (data_dir / "artifacts" / "evaluation_custom_cnn" / "metrics.json").is_file()
    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_runs()) == 2
        assert len(instance.fetch_materializations(key, limit=10).records) == 1  # not retrained

    # The trained bundle is what `predict -m` and `models` now find.
    predict = runner.invoke(app, ["predict", str(photos / "a.png"), "-m", "custom_cnn"])
    assert predict.exit_code == 0, predict.output
    models = runner.invoke(app, ["models"])
    row = next(ln for ln in models.stdout.splitlines() if "custom_cnn" in ln)
    assert "yes" in row and "-" != row.split()[-1]


@pytest.mark.slow
def test_failed_run_prints_the_reason(
    runner: CliRunner, data_dir: Path, dagster_home: Path, tmp_path: Path
) -> None:
    """A Failure inside the run (a bad data source) is one line, exit 1, no traceback."""
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump({"ops": {"food_images_raw": {"config": {"source": "imagefolder"}}}})
    )
    result = runner.invoke(app, ["train", "custom_cnn", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert "error: food_images_raw failed: source imagefolder needs `root`" in result.stderr, (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_invalid_run_config_is_a_user_error(
    runner: CliRunner, data_dir: Path, dagster_home: Path
) -> None:
    result = runner.invoke(app, ["train", "custom_cnn", "--lr", "0"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: invalid run config")
