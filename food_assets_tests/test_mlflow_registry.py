"""The MLflow side (ADR 0004, ADR 0012): one run per model materialization ended by the code that
opened it, a registered version per trained model, the `champion` alias on the best model that
passed its accuracy floor, and `predict` / the demo loading `champion` and `models:/` URIs.

Against the embedded SQLite store. Each test's docstring names the breakage tried on purpose
(and seen failing) when it was written.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from food_assets import catalog
from food_assets.ml.errors import UnknownModelError
from food_assets.tracking import model_registry
from food_assets.tracking import runs as tracking
from food_assets_tests.conftest import tiny_run_config

REPO = Path(__file__).resolve().parents[1]
PASSING, FAILING = "custom_cnn", "efficientnet_lite0"
#: Trained here (entries with installed weights, such as efficientnet_lite2, train too); the
#: others decline (`on_missing_weights: skip`, CLIP has no weights), so their evaluations are
#: `Skipped` values and the leaderboard still has every input. Every floor but PASSING's is
#: 1.01: only PASSING can be the champion, however accurate the others are.
TRAINED = (PASSING, FAILING)


# -- fast: the rules on their own --------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "configured", "env", "expected"),
    [
        ("http://mlflow.internal:5000/", None, None, "http://mlflow.internal:5000"),
        ("https://user:secret@mlflow.example.com/", "http://x", None, "https://mlflow.example.com"),
        ("sqlite:////data/mlflow/mlflow.db", None, None, "http://127.0.0.1:5000"),
        ("sqlite:////data/mlflow/mlflow.db", None, "http://ui.lan:8080/", "http://ui.lan:8080"),
        (
            "postgresql+psycopg2://u:p@db/mlflow",
            "http://mlflow.team",
            "http://env",
            "http://mlflow.team",
        ),
    ],
)
def test_ui_link_is_built_from_the_tracking_uri(uri, configured, env, expected, monkeypatch):
    """An http(s) tracking URI is its own UI (credentials dropped); any other store links to the
    resource's `ui_url`, else FOOD_ASSETS_MLFLOW_UI_URL, else http://127.0.0.1:5000. Breakage
    tried: the old hard-coded `http://localhost:5000` (fails every row)."""
    if env:
        monkeypatch.setenv(tracking.UI_URL_ENV, env)
    else:
        monkeypatch.delenv(tracking.UI_URL_ENV, raising=False)
    assert tracking.ui_url(uri, configured) == expected
    assert tracking.run_link(expected, "1", "abc") == f"{expected}/#/experiments/1/runs/abc"


def test_the_champion_rule_skips_failed_floors_and_unregistered_models():
    """Highest top-1 among models whose check passed with acc >= floor and that have a registered
    version; ties to the first name. Breakage tried: ranking every candidate by accuracy (picks
    the failed 0.9 model), and dropping the `version is not None` condition (picks `unreg`)."""
    c = tracking.Candidate
    candidates = [
        c("failed", 0.9, 0.95, False, 3),  # the most accurate, under its floor
        c("unreg", 0.8, 0.1, True, None),  # passed, but nothing registered to promote
        c("b_model", 0.6, 0.5, True, 1),
        c("a_model", 0.6, 0.5, True, 2),
        c("lying", 0.4, 0.5, True, 4),  # a "passed" record under its floor still does not count
    ]
    assert tracking.choose_champion(candidates).model == "a_model"
    assert tracking.choose_champion(candidates[:2] + candidates[4:]) is None


def test_a_run_left_active_against_a_vanished_store_is_ended(tmp_path):
    """`_end_stale_runs` ends a run whose store is gone (another test's data folder) with the
    public API and leaves nothing active. Breakage tried: `_end_active_run` without its
    `except MlflowException` (the loop raises "Run ... not found")."""
    from food_assets.defs.resources import _end_stale_runs

    before = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'a.db'}")
        mlflow.set_experiment("stale")
        mlflow.start_run()
        mlflow.start_run(nested=True)
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'b.db'}")  # the runs' store is elsewhere
        _end_stale_runs("another-dagster-run")
        assert mlflow.active_run() is None
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(before)


def test_no_private_mlflow_api_in_the_tracking_code():
    """resources.py, tracking.py, tracking_lineage.py, catalog.py and model_registry.py use
    MLflow's public API only. Breakage tried: the old `fluent._active_run_stack` fallback in
    `_end_stale_runs` (fails)."""
    for rel in (
        "food_assets/defs/resources.py",
        "food_assets/tracking/runs.py",
        "food_assets/catalog.py",
        "food_assets/tracking/model_registry.py",
        "food_assets/tracking/lineage.py",
    ):
        tree = ast.parse((REPO / rel).read_text())
        private = {
            n.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute)
            and n.attr.startswith("_")
            and not n.attr.startswith("__")
        }
        imports = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {p for p in private if "run" in p or "stack" in p}, (rel, private)
        assert "mlflow.tracking.fluent" not in imports, rel


def test_champion_without_a_store_says_what_to_do(tmp_path, monkeypatch):
    """No MLflow store under the data folder: one clear error (a `FoodAssetsError`), not an
    empty store created on the way. Breakage tried: `_client` without its file check (MLflow
    creates the database and the error becomes "no model holds ... champion")."""
    monkeypatch.delenv("FOOD_ASSETS_MLFLOW_URI", raising=False)
    with pytest.raises(UnknownModelError, match="no MLflow store"):
        catalog.registry_model("champion", tmp_path)
    assert not (tmp_path / "mlflow" / "mlflow.db").exists()


# -- slow: two tiny models through Dagster, one failing its floor --------------------------------


@pytest.fixture(scope="module")
def registry_runs(tmp_path_factory):
    """Run 1 trains `custom_cnn` and `efficientnet_lite0` (48 px, 2 epochs, 4 classes) and
    evaluates every model, with every floor but custom_cnn's at 1.01: the blocking checks of
    lite0 (and any other trained entry) fail that run.
    Run 2 materializes the leaderboard alone over the stored evaluations, on the same instance
    (which holds the check results). Both are real `dg.materialize` calls."""
    from food_assets.definitions import build_definitions, default_resources
    from food_assets.defs.resources import QualityGates, food_mlflow, mlflow_tracking_uri
    from food_assets.ml.models import get_model_spec, list_models

    data_dir = tmp_path_factory.mktemp("registry") / "data"
    resources = default_resources(str(data_dir))
    resources["quality"] = QualityGates(accuracy={"sample/*": 1.01, f"sample/{PASSING}": 0.0})
    # System metrics sampled often enough that a training of a few seconds logs some.
    resources["mlflow"] = food_mlflow.configured(
        {
            "experiment_name": "food_assets",
            "mlflow_tracking_uri": mlflow_tracking_uri(str(data_dir)),
            "system_metrics_interval_s": 0.5,
        }
    )
    defs = build_definitions(resources)
    ops = tiny_run_config()["ops"]
    for name in list_models():
        if name not in TRAINED and get_model_spec(name).family in ("scratch", "transfer"):
            ops[f"model_{name}"]["config"]["on_missing_weights"] = "skip"
    first = ["food_images_raw", "food_splits"]
    first += [f"{p}_{n}" for n in list_models() for p in ("model", "evaluation")]
    instance = dg.DagsterInstance.ephemeral()
    before = mlflow.get_tracking_uri()
    runs, active_after = {}, {}
    try:
        for label, selection in (("train", first), ("leaderboard", ["leaderboard"])):
            ops_now = {k: v for k, v in ops.items() if k in selection}
            runs[label] = dg.materialize(
                [*defs.assets, *defs.asset_checks],
                selection=dg.AssetSelection.assets(*selection),
                resources=resources,
                run_config={"ops": ops_now},
                instance=instance,
                raise_on_error=False,
            )
            active_after[label] = mlflow.active_run()
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(before)
    uri = f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"
    return {
        "runs": runs,
        "active_after": active_after,
        "data_dir": data_dir,
        "client": mlflow.MlflowClient(uri),
        "uri": uri,
    }


def _failed_steps(result) -> set[str]:
    return set(result.get_failed_step_keys())


@pytest.mark.slow
def test_the_failed_floor_fails_run_one_and_the_leaderboard_runs_in_run_two(registry_runs):
    train, board = registry_runs["runs"]["train"], registry_runs["runs"]["leaderboard"]
    trained = {
        n.removeprefix("model_")
        for n in train.dagster_run.step_keys_to_execute
        if n.startswith("model_") and hasattr(train.output_for_node(n), "bundle_dir")
    }
    assert set(TRAINED) <= trained
    assert _failed_steps(train) == {f"evaluation_{n}" for n in trained - {PASSING}}
    assert board.success, _failed_steps(board)


@pytest.mark.slow
def test_each_trained_model_registers_a_version_with_its_tags(registry_runs):
    """`model_<name>` registers a version of `food_assets.<name>` from its run's logged model,
    with the label map, preprocess and temperature as tags, and says so in its metadata.
    Breakage tried: `log_fit` without `register_version` (no registered model)."""
    client, result = registry_runs["client"], registry_runs["runs"]["train"]
    for name in TRAINED:
        value = result.output_for_node(f"model_{name}")
        versions = client.search_model_versions(f"name = 'food_assets.{name}'")
        assert len(versions) == 1, name
        mv = versions[0]
        assert mv.run_id == value.mlflow_run_id
        assert json.loads(mv.tags["label_map"]) == {
            str(i): c for i, c in enumerate(value.class_names)
        }
        assert json.loads(mv.tags["preprocess"])["input_size"] == 48
        assert value.metadata[tracking.MODEL_VERSION_KEY] == int(mv.version)
        meta = result.asset_materializations_for_node(f"model_{name}")[-1].metadata
        assert meta["mlflow_model_uri"].value == f"models:/food_assets.{name}/{mv.version}"
    # The evaluation's temperature reaches the passing version's tags through the leaderboard.
    report = result.output_for_node(f"evaluation_{PASSING}")
    mv = client.get_model_version(f"food_assets.{PASSING}", "1")
    assert float(mv.tags["temperature"]) == pytest.approx(report.temperature)
    assert mv.tags["temperature_source"] == model_registry.TEMPERATURE_FROM_EVALUATION


@pytest.mark.slow
def test_champion_goes_to_the_model_that_passed_its_floor(registry_runs):
    """The leaderboard puts `champion` on `food_assets.custom_cnn` and never on lite0, whose
    floor check failed (whatever its accuracy). Breakage tried: `Candidate.eligible` true for
    every model with a registered version (a failed model with a higher accuracy, here an
    EfficientNet-Lite, takes the alias: fails)."""
    client = registry_runs["client"]
    mv = client.get_model_version_by_alias(f"food_assets.{PASSING}", "champion")
    assert str(mv.version) == "1" and mv.tags["accuracy_check"] == "passed"
    failing = client.get_registered_model(f"food_assets.{FAILING}")
    assert "champion" not in failing.aliases
    assert client.get_model_version(f"food_assets.{FAILING}", "1").tags["accuracy_check"] == (
        "failed"
    )
    meta = registry_runs["runs"]["leaderboard"].asset_materializations_for_node("leaderboard")
    assert meta[-1].metadata["champion_uri"].value == f"models:/food_assets.{PASSING}@champion"


@pytest.mark.slow
def test_model_runs_are_ended_by_their_opener_and_linked(registry_runs):
    """One nested run per model, finished; the parent run (dagster-mlflow's) finished by the
    resource's teardown, nothing left active in the process after either run; the metadata link
    points at the configured UI (default http://127.0.0.1:5000), not a hard-coded host.
    Breakage tried: `food_mlflow` returning the resource without ending its parent (the parent
    stays RUNNING and active after run 1)."""
    client, result = registry_runs["client"], registry_runs["runs"]["train"]
    assert registry_runs["active_after"] == {"train": None, "leaderboard": None}
    run_ids = {n: result.output_for_node(f"model_{n}").mlflow_run_id for n in TRAINED}
    assert len(set(run_ids.values())) == len(TRAINED)
    for name, run_id in run_ids.items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED", name
        parent = client.get_run(run.data.tags["mlflow.parentRunId"])
        assert parent.info.status == "FINISHED"
        # Lightning's MLFlowLogger wrote the per-epoch curve (2 epochs) into this same run.
        assert len({m.step for m in client.get_metric_history(run_id, "val/acc_top1")}) >= 2
        link = result.asset_materializations_for_node(f"model_{name}")[-1].metadata["mlflow_run"]
        assert link.value.startswith("http://127.0.0.1:5000/#/experiments/")
        assert link.value.endswith(f"/runs/{run_id}")


def _test_images(registry_runs, n: int = 6) -> list[str]:
    frame = registry_runs["runs"]["train"].output_for_node("food_splits").frame("test")
    return list(frame["path"][:n])


@pytest.mark.slow
@pytest.mark.parametrize("ref", ["champion", f"models:/food_assets.{PASSING}@champion"])
def test_predict_champion_matches_the_bundle(registry_runs, ref, monkeypatch):
    """`predict --model champion` (and the full `models:/` URI) downloads the registered
    version's bundle and gives the same top-1 per image as `--from` the model's own bundle.
    Breakage tried: the `champion` lookup resolving to `food_assets.<FAILING>` version 1 (fails:
    stderr names the other version; its top-1 labels need not differ on 6 images)."""
    from typer.testing import CliRunner

    from food_assets.cli import app

    monkeypatch.delenv("FOOD_ASSETS_MLFLOW_URI", raising=False)
    monkeypatch.delenv("FOOD_ASSETS_ARTIFACT_ROOT", raising=False)
    data_dir, images = registry_runs["data_dir"], _test_images(registry_runs)
    bundle = registry_runs["runs"]["train"].output_for_node(f"model_{PASSING}").bundle_dir
    runner = CliRunner()
    base = ["--data-dir", str(data_dir), "predict", *images, "--format", "json"]
    got = runner.invoke(app, [*base, "--model", ref])
    assert got.exit_code == 0, got.output
    want = runner.invoke(app, [*base, "--from", str(bundle)])
    assert want.exit_code == 0, want.output

    def top1(output: str) -> list[str]:
        return [r["label"] for r in json.loads(output[output.index("[") :])]

    assert top1(got.stdout) == top1(want.stdout)
    assert "version 1" in got.stderr and f"food_assets.{PASSING}" in got.stderr
    cached = data_dir / "cache" / model_registry.REGISTRY_CACHE / f"food_assets.{PASSING}" / "1"
    assert (cached / "bundle" / "card.json").is_file()


@pytest.mark.slow
def test_the_demo_serves_the_champion(registry_runs, monkeypatch):
    """`DemoService(default_model="champion")` answers with the registered version (same top
    class as the model's own materialized bundle) and says where it came from. Breakage tried:
    `_resolve_default` without its registry branch (UnknownModelError: not materialized)."""
    from food_assets.demo.service import DemoService

    monkeypatch.delenv("FOOD_ASSETS_MLFLOW_URI", raising=False)
    monkeypatch.delenv("FOOD_ASSETS_ARTIFACT_ROOT", raising=False)
    data_dir = registry_runs["data_dir"]
    service = DemoService(data_dir, default_model="champion")
    assert service.default_model == f"models:/food_assets.{PASSING}@champion"
    image = _test_images(registry_runs, 1)[0]
    got = service.predict(image, None)
    want = DemoService(data_dir, default_model=PASSING).predict(image, None)
    assert got.ok and want.ok, (got.message, want.message)
    assert next(iter(got.top)) == next(iter(want.top))
    assert "models:/food_assets.custom_cnn@champion (version 1)" in got.info


# -- the CLI: `models` names the champion, `demo --help` says how to serve it ------------------

CHAMPION_LINE = "MLflow registry champion:"


def _models_champion_line(data_dir: Path) -> str | None:
    from typer.testing import CliRunner

    from food_assets.cli import app

    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), "models"])
    assert result.exit_code == 0, result.output
    return next((ln for ln in result.stdout.splitlines() if ln.startswith(CHAMPION_LINE)), None)


def test_demo_help_names_champion_and_the_models_uri():
    """`food-assets demo --help` tells what `--model` takes, as `predict --help` does: `champion`
    and `models:/food_assets.<name>@champion`. Breakage tried: the help's URIs without their
    backticks (the Markdown help drops a bare `<name>`: fails), and the old "Model name" help."""
    from typer.testing import CliRunner

    from food_assets.cli import app

    result = CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert "`--model champion`" in text or "--model champion" in text
    assert "models:/food_assets.<name>@champion" in text
    assert "models:/food_assets.<name>/<version>" in text
    assert "FOOD_ASSETS_MLFLOW_URI" in text


def test_models_prints_no_champion_line_without_a_store(tmp_path, monkeypatch):
    """No MLflow store under the data folder: the table, no champion line, and no store created
    by asking. Breakage tried: `_champion` without its store check (a "not resolved: no MLflow
    store" line: fails)."""
    monkeypatch.delenv("FOOD_ASSETS_MLFLOW_URI", raising=False)
    assert _models_champion_line(tmp_path) is None
    assert not (tmp_path / "mlflow" / "mlflow.db").exists()


@pytest.mark.slow
def test_models_prints_the_champion_from_the_registry(registry_runs, monkeypatch):
    """After the real run, `food-assets models` names `models:/food_assets.custom_cnn@champion`
    (version 1), and it reads the alias itself: moved by hand to the other model, the line
    follows; removed, the line says no model holds it. Breakage tried: the line made from
    `catalog.best_model` instead of the registry (fails)."""
    monkeypatch.delenv("FOOD_ASSETS_MLFLOW_URI", raising=False)
    monkeypatch.delenv("FOOD_ASSETS_ARTIFACT_ROOT", raising=False)
    data_dir, client = registry_runs["data_dir"], registry_runs["client"]
    line = _models_champion_line(data_dir)
    assert line is not None and line.startswith(
        f"{CHAMPION_LINE} models:/food_assets.{PASSING}@champion (version 1;"
    )
    passing, failing = f"food_assets.{PASSING}", f"food_assets.{FAILING}"
    try:
        client.delete_registered_model_alias(passing, "champion")
        client.set_registered_model_alias(failing, "champion", "1")
        assert f"models:/{failing}@champion (version 1;" in _models_champion_line(data_dir)
        client.delete_registered_model_alias(failing, "champion")
        missing = _models_champion_line(data_dir)
        assert missing.startswith(f"{CHAMPION_LINE} not resolved: no model holds")
    finally:  # the module's other tests read the alias the leaderboard set
        for name in (passing, failing):
            if "champion" in client.get_registered_model(name).aliases:
                client.delete_registered_model_alias(name, "champion")
        client.set_registered_model_alias(passing, "champion", "1")


# -- lineage (ADR 0023): datasets, system metrics, test metrics on the logged model ------------


@pytest.mark.slow
def test_model_runs_log_their_datasets_and_system_metrics(registry_runs):
    """Each trained model's run has the train and val manifests as inputs (contexts training and
    validation), each with the split's content digest and the splits file as its source, and
    `system/*` metrics sampled while it trained; the asset's metadata names the same digests.
    Breakage tried: `log_training_datasets` not called (no inputs); `log_system_metrics=False`
    in `model_run` (no system metrics); the digest of the whole manifest for every split (train
    and val digests equal)."""
    from food_assets.ml.data.lineage import short

    client, result = registry_runs["client"], registry_runs["runs"]["train"]
    splits = result.output_for_node("food_splits")
    want = {s: short(splits.digest(s)) for s in ("train", "val")}
    assert want["train"] != want["val"]
    for name in TRAINED:
        run = client.get_run(result.output_for_node(f"model_{name}").mlflow_run_id)
        inputs = {
            d.dataset.name: (d.dataset.digest, [t.value for t in d.tags], d.dataset.source)
            for d in run.inputs.dataset_inputs
        }
        for split, context in (("train", "training"), ("val", "validation")):
            digest, contexts, source = inputs[f"food_splits/{split}"]
            assert digest == want[split] and context in contexts, (name, inputs)
            assert str(splits.path) in source
        meta = result.asset_materializations_for_node(f"model_{name}")[-1].metadata
        assert meta["train_dataset_digest"].value == want["train"]
        system = {k for k in run.data.metrics if k.startswith("system/")}
        assert "system/cpu_utilization_percentage" in system, (name, sorted(run.data.metrics))
        assert "system/system_memory_usage_megabytes" in system


@pytest.mark.slow
def test_test_metrics_are_linked_to_the_logged_model_and_rank_the_leaderboard(registry_runs):
    """The evaluation logs its test metrics on the model its run logged, against
    the test split as a dataset; `leaderboard_from_mlflow` (`search_logged_models` ordered by
    test top-1) lists the trained models best first with the evaluations' figures, in the
    leaderboard asset's order. Breakage tried: `log_metrics` without `model_id` (the logged
    models have no metrics: the MLflow leaderboard is empty); ordered ascending (the order
    check fails); the test digest filter ignoring the digest (the unknown-digest case fails)."""
    from food_assets.ml.data.lineage import short
    from food_assets.tracking.lineage import leaderboard_from_mlflow

    client, result = registry_runs["client"], registry_runs["runs"]["train"]
    splits = result.output_for_node("food_splits")
    test_digest = short(splits.digest("test"))
    trained = {
        n.removeprefix("model_")
        for n in result.dagster_run.step_keys_to_execute
        if n.startswith("model_") and hasattr(result.output_for_node(n), "bundle_dir")
    }
    for name in trained:
        value = result.output_for_node(f"model_{name}")
        run = client.get_run(value.mlflow_run_id)
        (logged,) = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{value.mlflow_run_id}'",
        )
        top1 = [m for m in logged.metrics if m.key == "test/acc_top1"]
        report = result.output_for_node(f"evaluation_{name}")
        assert [m.value for m in top1] == [pytest.approx(report.summary["test/acc_top1"])]
        assert {(m.dataset_name, m.dataset_digest) for m in top1} == {
            ("food_splits/test", test_digest)
        }
        assert logged.source_run_id == value.mlflow_run_id
        meta = result.asset_materializations_for_node(f"evaluation_{name}")[-1].metadata
        assert meta["test_dataset_digest"].value == test_digest

    board = leaderboard_from_mlflow(tracking_uri=registry_runs["uri"], test_digest=test_digest)
    assert set(board["model"]) == trained
    accs = list(board["test/acc_top1"])
    assert accs == sorted(accs, reverse=True)
    table = registry_runs["runs"]["leaderboard"].output_for_node("leaderboard")
    table = table[table["model"].isin(trained)]
    rebuilt = board.sort_values(["test/acc_top1", "model"], ascending=[False, True])
    assert list(rebuilt["model"]) == list(table["model"])
    assert list(rebuilt["test/acc_top1"]) == pytest.approx(list(table["acc_top1"]))
    assert leaderboard_from_mlflow(tracking_uri=registry_runs["uri"], test_digest="0" * 16).empty


def test_a_model_registered_before_the_move_finds_its_pyfunc_class() -> None:
    """MLflow pickled the pyfunc by reference: a model logged before the MLflow code moved to
    `food_assets/tracking/` (ADR 0026) names `food_assets.server.pyfunc.FoodClassifier`. That
    name still gives the class the tracking side logs today.

    Breakage tried: `food_assets/server/pyfunc.py` deleted: the unpickling raises
    ModuleNotFoundError."""
    import pickle

    from food_assets.tracking.pyfunc import FoodClassifier

    old = b"cfood_assets.server.pyfunc\nFoodClassifier\n."  # protocol 0: a GLOBAL, then STOP
    assert pickle.loads(old) is FoodClassifier  # noqa: S301 (our own bytes)
