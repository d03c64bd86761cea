"""Team deployment selected by config alone: Dagster storage and MLflow tracking in a real
PostgreSQL server (started here on loopback), the same assets and resources as on a laptop.

Needs Debian's `postgresql` (`make setup` installs it when root). Without it the test skips
with the install command, except in CI (`CI=true`), where a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from food_assets_tests.conftest import tiny_run_config
from food_assets_tests.pg import INSTALL_HINT, PgServer, find_pg_bin, start_postgres

REPO = Path(__file__).resolve().parents[1]
TEAM = REPO / "configs" / "team"
#: Creates MLflow's tables in an empty database (`mlflow db upgrade` only migrates existing ones).
INIT_MLFLOW_DB = "import sys, mlflow; mlflow.MlflowClient(sys.argv[1]).search_experiments()"
SELECTED = ("food_images_raw", "food_splits", "model_custom_cnn", "evaluation_custom_cnn")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    # Lightning 2.6's own _pytree helper calls a torch 2.14 API that warns; not our code.
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
]


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    """A private PostgreSQL server for this module, stopped (and deleted) in the finalizer."""
    if find_pg_bin() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {INSTALL_HINT}")
        pytest.skip(INSTALL_HINT)
    with start_postgres(timeout_s=60) as server:
        yield server


@contextlib.contextmanager
def _mlflow_run_closed() -> Iterator[None]:
    """End the parent run dagster-mlflow leaves active in this process while the server is
    still up, and restore the tracking URI: otherwise MLflow's exit hook dials a stopped server
    and later tests would nest their runs under a run of another store."""
    import mlflow

    before = mlflow.get_tracking_uri()
    try:
        yield
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(before)


def _pg_count(url: str, sql: str) -> int:
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return int(cur.fetchone()[0])
    finally:
        conn.close()


@dataclass
class TeamSetup:
    """configs/team as it ships, on the test's server: the instance folder, the resources and
    the databases' URLs."""

    home: Path
    resources: dict
    dagster_url: str
    mlflow_url: str
    artifact_root: Path


def _team_setup(
    pg: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, suffix: str = ""
) -> TeamSetup:
    """Fresh `dagster<suffix>` and `mlflow<suffix>` databases, DAGSTER_HOME with the team's
    dagster.yaml, and the team's MLflow resource config (only the artifact root made local)."""
    from food_assets.definitions import default_resources
    from food_assets.defs.resources import QualityGates, food_mlflow

    dagster_url = pg.create_database(f"dagster{suffix}")
    # MLflow's SQLAlchemy store picks the psycopg (3) driver for a bare postgresql:// URL; the
    # `team` extra ships psycopg2, so the URL names that driver.
    mlflow_url = pg.create_database(f"mlflow{suffix}").replace(
        "postgresql://", "postgresql+psycopg2://"
    )

    # The instance: configs/team/dagster.yaml as it ships, credentials from DAGSTER_PG_*.
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(TEAM / "dagster.yaml", home / "dagster.yaml")
    for key, value in pg.env(f"dagster{suffix}").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_DIR", str(tmp_path / "compute_logs"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    # MLflow: configs/team/mlflow.yaml as it ships, the URI from FOOD_ASSETS_MLFLOW_URI; only the
    # artifact root moves from S3 to a local folder. The schema is created once, up front, with
    # the same one-liner the operations guide gives (step processes would race otherwise).
    monkeypatch.setenv("FOOD_ASSETS_MLFLOW_URI", mlflow_url)
    subprocess.run([sys.executable, "-c", INIT_MLFLOW_DB, mlflow_url], check=True, timeout=120)
    mlflow_cfg = yaml.safe_load((TEAM / "mlflow.yaml").read_text())
    assert mlflow_cfg["mlflow_tracking_uri"] == {"env": "FOOD_ASSETS_MLFLOW_URI"}
    artifact_root = tmp_path / "mlflow_artifacts"
    mlflow_cfg["artifact_location"] = artifact_root.as_uri()

    resources = default_resources(str(tmp_path / "data"))
    resources["mlflow"] = food_mlflow.configured(mlflow_cfg)
    resources["quality"] = QualityGates(accuracy={"sample/*": 0.0})  # gates have own tests
    return TeamSetup(home, resources, dagster_url, mlflow_url, artifact_root)


def test_team_config_runs_the_graph_on_postgres(
    pg: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg
    from mlflow.tracking import MlflowClient

    from food_assets.definitions import build_definitions

    team = _team_setup(pg, tmp_path, monkeypatch)
    home, resources, mlflow_url = team.home, team.resources, team.mlflow_url
    dagster_url, artifact_root = team.dagster_url, team.artifact_root
    defs = build_definitions(resources)
    ops = tiny_run_config(custom_cnn={"epochs": 1, "warmup_epochs": 0.5})["ops"]
    run_config = {"ops": {k: v for k, v in ops.items() if k in SELECTED}}

    with dg.DagsterInstance.from_config(str(home)) as instance, _mlflow_run_closed():
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks],
            selection=dg.AssetSelection.assets(*SELECTED),
            resources=resources,
            run_config=run_config,
            instance=instance,
            raise_on_error=False,
        )
        assert result.success, [e.message for e in result.get_step_failure_events()]
        run_id = result.run_id

    # Read everything back through a *new* instance: it can only come from the database.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        for key in SELECTED:
            records = instance.fetch_materializations(dg.AssetKey(key), limit=1).records
            assert records and records[0].run_id == run_id, key
        checks = {
            ("food_splits", "every_class_in_every_split"),
            ("food_splits", "no_content_leak_train_test"),
            ("evaluation_custom_cnn", "accuracy_above_floor"),
        }
        for asset, check in checks:
            key = dg.AssetCheckKey(dg.AssetKey(asset), check)
            history = instance.event_log_storage.get_asset_check_execution_history(key, limit=5)
            assert history and history[0].run_id == run_id, key
            evaluation = history[0].event.dagster_event.event_specific_data
            assert evaluation.passed, key
        meta = instance.fetch_materializations(dg.AssetKey("model_custom_cnn"), limit=1)
        materialization = meta.records[0].asset_materialization
        mlflow_run_id = materialization.metadata["mlflow_run_id"].value
        # As is, bar its password (`food_assets.tracking.redact`, ADR 0025).
        shown = mlflow_url.replace(f":{pg.password}@", ":***@")
        assert materialization.metadata["mlflow_tracking_uri"].value == shown

    assert _pg_count(dagster_url, f"select count(*) from runs where run_id = '{run_id}'") == 1
    assert _pg_count(dagster_url, "select count(*) from asset_check_executions") >= 3

    # MLflow: the model's run, its metrics, the evaluation figures and the artifacts.
    client = MlflowClient(tracking_uri=mlflow_url)
    experiment = client.get_experiment_by_name("food_assets")
    assert experiment.artifact_location == artifact_root.as_uri()
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.dagster_run_id = '{run_id}'"
    )
    model_run = next(r for r in runs if r.info.run_id == mlflow_run_id)
    assert model_run.data.tags["asset"] == "model_custom_cnn"
    assert model_run.data.params["model"] == "custom_cnn"
    assert {"best_val_acc", "test/acc_top1"} <= set(model_run.data.metrics)
    # Lineage on Postgres too (ADR 0023): the run's datasets, and the test top-1 on its logged
    # model, which the leaderboard rebuilt from MLflow alone finds.
    from food_assets.tracking.lineage import leaderboard_from_mlflow

    inputs = {d.dataset.name for d in model_run.inputs.dataset_inputs}
    assert inputs == {"food_splits/train", "food_splits/val", "food_splits/test"}
    board = leaderboard_from_mlflow(tracking_uri=mlflow_url)
    assert list(board["model"]) == ["custom_cnn"] and list(board["run_id"]) == [mlflow_run_id]
    assert board["test/acc_top1"][0] == pytest.approx(model_run.data.metrics["test/acc_top1"])
    assert {a.path for a in client.list_artifacts(mlflow_run_id)} >= {"bundle", "evaluation"}
    assert (artifact_root / mlflow_run_id / "artifacts" / "bundle" / "card.json").is_file()
    mlflow_db = mlflow_url.replace("+psycopg2", "")
    assert _pg_count(mlflow_db, "select count(*) from runs") >= 2  # parent + model run
    # The Model Registry in the same database (ADR 0012): the model is a registered version.
    versions = client.search_model_versions("name = 'food_assets.custom_cnn'")
    assert [v.run_id for v in versions] == [mlflow_run_id]
    assert "label_map" in versions[0].tags


def test_champion_alias_in_the_postgres_registry(
    pg: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The team setup up to the leaderboard (custom_cnn trains, the others decline): the
    leaderboard sets `champion` in the MLflow Model Registry on PostgreSQL (the alias row is in
    the database), and `champion` and `models:/food_assets.custom_cnn@champion` resolve through
    `model_registry` against that store (FOOD_ASSETS_MLFLOW_URI): the trained bundle, downloaded
    from the artifact root, with the evaluation's temperature.

    Breakage tried: `MlflowClient.set_registered_model_alias` made a no-op, so `set_champion`
    sets no alias (fails: "Registered model alias champion not found")."""
    import dagster as dg
    from mlflow.tracking import MlflowClient

    from food_assets import catalog
    from food_assets.definitions import build_definitions
    from food_assets_tests.leaderboard_run import leaderboard_run_config, leaderboard_selection

    team = _team_setup(pg, tmp_path, monkeypatch, suffix="_champion")
    selection = leaderboard_selection("custom_cnn")
    run_config = leaderboard_run_config("custom_cnn", selection, epochs=1, warmup_epochs=0.5)
    defs = build_definitions(team.resources)
    with dg.DagsterInstance.from_config(str(team.home)) as instance, _mlflow_run_closed():
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks],
            selection=dg.AssetSelection.assets(*selection),
            resources=team.resources,
            run_config=run_config,
            instance=instance,
            raise_on_error=False,
        )
        assert result.success, [e.message for e in result.get_step_failure_events()]
    uri = "models:/food_assets.custom_cnn@champion"
    board = result.asset_materializations_for_node("leaderboard")[-1].metadata
    assert board["champion"].value == "custom_cnn" and board["champion_uri"].value == uri

    client = MlflowClient(team.mlflow_url)
    mv = client.get_model_version_by_alias("food_assets.custom_cnn", "champion")
    model = result.output_for_node("model_custom_cnn")
    assert mv.run_id == model.mlflow_run_id and mv.tags["accuracy_check"] == "passed"
    mlflow_db = team.mlflow_url.replace("+psycopg2", "")
    aliases = "select count(*) from registered_model_aliases where alias = 'champion'"
    assert _pg_count(mlflow_db, aliases) == 1

    report = result.output_for_node("evaluation_custom_cnn")
    weights = (model.bundle_dir / "model.safetensors").read_bytes()
    for ref in ("champion", uri):  # FOOD_ASSETS_MLFLOW_URI is the team's store (_team_setup)
        entry = catalog.registry_model(ref, tmp_path / "consumer")
        assert entry.name == uri and entry.registry.version == str(mv.version)
        assert entry.calibrated and entry.temperature == pytest.approx(report.temperature)
        assert (entry.bundle_dir / "model.safetensors").read_bytes() == weights


def _pg_texts(url: str, tables: dict[str, str]) -> dict[str, str]:
    """Every row of each table as text (`select t::text from t`), joined: what is stored."""
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        out = {}
        with conn.cursor() as cur:
            for table, alias in tables.items():
                cur.execute(f"select {alias}::text from {table} {alias}")
                out[table] = "\n".join(row[0] for row in cur.fetchall())
        return out
    finally:
        conn.close()


def test_no_password_in_what_the_team_setup_records_or_prints(
    pg: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """The team setup with password-bearing URIs (`postgresql+psycopg2://food:<pw>@...` for
    MLflow, DAGSTER_PG_PASSWORD for Dagster) through a model and its evaluation: the password is
    nowhere in the event log (every row of Dagster's database), the asset metadata, the MLflow
    params, tags and registry (every row of MLflow's database), nor in what the run printed. The
    metadata still shows the tracking URI, with `***` for the password. Breakage tried:
    `tracking.ModelRun.metadata` giving the URI unredacted (the password is then in the
    metadata and the event log: the test fails)."""
    import dagster as dg

    from food_assets.definitions import build_definitions

    team = _team_setup(pg, tmp_path, monkeypatch, suffix="_secrets")
    password = pg.password
    assert password in team.mlflow_url and os.environ["DAGSTER_PG_PASSWORD"] == password
    defs = build_definitions(team.resources)
    ops = tiny_run_config(custom_cnn={"epochs": 1, "warmup_epochs": 0.5})["ops"]
    run_config = {"ops": {k: v for k, v in ops.items() if k in SELECTED}}
    with dg.DagsterInstance.from_config(str(team.home)) as instance, _mlflow_run_closed():
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks],
            selection=dg.AssetSelection.assets(*SELECTED),
            resources=team.resources,
            run_config=run_config,
            instance=instance,
            raise_on_error=False,
        )
        assert result.success, [e.message for e in result.get_step_failure_events()]
        meta = result.asset_materializations_for_node("model_custom_cnn")[0].metadata
    printed = capfd.readouterr()
    shown = meta["mlflow_tracking_uri"].value
    assert shown == team.mlflow_url.replace(f":{password}@", ":***@") and "@127.0.0.1" in shown

    dagster_rows = _pg_texts(
        team.dagster_url, {"event_logs": "e", "runs": "r", "run_tags": "t", "asset_keys": "a"}
    )
    mlflow_db = team.mlflow_url.replace("+psycopg2", "")
    mlflow_rows = _pg_texts(
        mlflow_db,
        {"params": "p", "tags": "t", "metrics": "m", "experiments": "x", "model_versions": "v",
         "model_version_tags": "mt", "registered_models": "rm", "runs": "r"},
    )  # fmt: skip
    assert "mlflow_tracking_uri" in dagster_rows["event_logs"]  # the search sees metadata
    assert "dagster_run_id" in mlflow_rows["tags"]  # and MLflow's tags
    for where, text in {**dagster_rows, **mlflow_rows, "stdout": printed.out,
                        "stderr": printed.err}.items():  # fmt: skip
        assert password not in text, f"the password is in {where}"
