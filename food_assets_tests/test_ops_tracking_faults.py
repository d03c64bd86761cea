"""Faults of the MLflow side (issue #29): a kill during the leaderboard's registry update, and
the team's tracking server going away while a model trains.

The registry has no transaction over several writes; what keeps it trustworthy is their order
(`tracking.promote_champion`): the alias comes off the other models first, then the versions'
tags are written, then the alias goes on the champion, last, once its bundle files are found.
The tests look at the registry in every state a kill can leave (before each write) and after a
real SIGKILL; and they run training against a real `mlflow server` on loopback that is killed
after the first checkpoint, then started again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from food_assets_tests.conftest import tiny_run_config
from food_assets_tests.test_ops_crash_recovery import (
    CLI_THAT_HANGS_AT,
    Setup,
    _assert_nothing_left_behind,
    _process,
)
from food_assets_tests.test_ops_faults import _kill, _wait_for

pytestmark = [
    pytest.mark.usefixtures("mlflow_isolated"),
    # Lightning 2.6's own _pytree helper calls a torch 2.14 API that warns; not our code.
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
]

CHAMPION = "champion"


# -- the registry in every state a kill can leave ------------------------------------------------


def _registry_problems(client, prefix: str = "food_assets.") -> list[str]:
    """What a consumer of the registry must never see: two champions, the alias on a version
    tagged as failed, the alias or any version without its bundle files."""
    problems = []
    models = client.search_registered_models(filter_string=f"name LIKE '{prefix}%'")
    holders = [m for m in models if CHAMPION in m.aliases]
    if len(holders) > 1:
        problems.append(f"two champions: {[m.name for m in holders]}")
    for m in models:
        for mv in client.search_model_versions(f"name = '{m.name}'"):
            files = {a.path for a in client.list_artifacts(mv.run_id, "bundle")}
            if not {"bundle/card.json", "bundle/model.safetensors"} <= files:
                if m.aliases.get(CHAMPION) == mv.version:
                    problems.append(f"the champion {m.name}/{mv.version} has no bundle files")
        if CHAMPION in m.aliases:
            mv = client.get_model_version(m.name, m.aliases[CHAMPION])
            if mv.tags.get("accuracy_check") == "failed":
                problems.append(f"the champion {m.name}/{mv.version} is tagged failed")
    return problems


def _register(client, experiment: str, model: str, with_files: bool = True) -> str:
    """A run with a (tiny, real-looking) bundle among its artifacts and a version of
    `food_assets.<model>` registered from it; `with_files=False`: a run whose bundle is gone."""
    run = client.create_run(experiment)
    if with_files:
        client.log_text(run.info.run_id, "{}", "bundle/card.json")
        client.log_text(run.info.run_id, "weights", "bundle/model.safetensors")
    client.set_terminated(run.info.run_id)
    name = f"food_assets.{model}"
    with contextlib.suppress(Exception):
        client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/bundle", run.info.run_id)
    return mv.version


@pytest.mark.slow  # about 9 s on a loaded 2-core machine (a SQLite store, ~20 checked writes)
def test_promote_champion_leaves_a_trustworthy_registry_between_any_two_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGKILL can come between any two of the leaderboard's registry writes. Before each
    write (and after the last) the registry on a real SQLite store holds at most one champion,
    never on a version tagged failed nor on one without its bundle files. Scenario: `alpha`
    holds the alias and now fails its floor; `beta` passed; `gamma` passed with a higher top-1
    but its version's bundle files are gone. Outcome: `beta` is the champion, alpha is tagged
    failed and has no alias. Breakage tried: the tags written before the alias comes off the
    other models (the old order: alpha holds the alias while tagged failed: fails); the alias
    moved before the other models lose it (two champions: fails); no bundle-file check (gamma
    becomes the champion: fails)."""
    import mlflow

    from food_assets.tracking import runs as tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("food_assets", tmp_path.joinpath("art").as_uri())
    alpha = _register(client, experiment, "alpha")
    beta = _register(client, experiment, "beta")
    gamma = _register(client, experiment, "gamma", with_files=False)
    client.set_registered_model_alias("food_assets.alpha", CHAMPION, alpha)
    Candidate = tracking.Candidate
    candidates = [
        Candidate("alpha", 0.80, 0.9, False, int(alpha), "accuracy_above_floor failed"),
        Candidate("beta", 0.60, 0.5, True, int(beta)),
        Candidate("gamma", 0.95, 0.5, True, int(gamma)),
    ]
    seen: list[tuple[str, list[str]]] = []
    writes = (
        "set_model_version_tag",
        "delete_registered_model_alias",
        "set_registered_model_alias",
    )
    for name in writes:
        real = getattr(mlflow.MlflowClient, name)

        def checked(self, *args, _real=real, _name=name, **kwargs):
            seen.append((_name, _registry_problems(client)))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(mlflow.MlflowClient, name, checked)
    champion = tracking.promote_champion(uri, candidates, {"alpha": 1, "beta": 1.5, "gamma": 1})
    monkeypatch.undo()
    seen.append(("end", _registry_problems(client)))

    assert len(seen) > 10  # every tag of three versions, the alias off alpha, the alias on beta
    assert [(w, p) for w, p in seen if p] == []
    assert champion is not None and champion.model == "beta"
    assert client.get_model_version_by_alias("food_assets.beta", CHAMPION).version == beta
    assert CHAMPION not in client.get_registered_model("food_assets.alpha").aliases
    assert CHAMPION not in client.get_registered_model("food_assets.gamma").aliases
    assert client.get_model_version("food_assets.alpha", alpha).tags["accuracy_check"] == "failed"
    assert client.get_model_version("food_assets.beta", beta).tags["temperature"] == "1.5"


# -- a real SIGKILL during the leaderboard's registry update ---------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_sigkill_during_the_leaderboards_registry_update_then_the_same_run_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """custom_cnn is the champion (version 1), then its evaluation fails a raised floor. A real
    `food-assets run --select leaderboard` is SIGKILLed inside its registry update (after the
    versions' tags are written, before any alias is set). The registry it leaves: no champion
    tagged failed, every version with its files. The same command again completes within
    bounded time: the dead run is FAILED, no slot held, no MLflow run RUNNING, custom_cnn is no
    longer the champion and its version says why. Breakage tried: `promote_champion` writing the
    tags before taking the alias off (the old order: the kill leaves the champion on version 1
    tagged `failed`: fails)."""
    import dagster as dg
    import mlflow
    from typer.testing import CliRunner

    from food_assets.cli import app
    from food_assets.definitions import build_definitions, default_resources
    from food_assets.defs.resources import QualityGates
    from food_assets_tests.leaderboard_run import leaderboard_run_config, leaderboard_selection

    setup = Setup(tmp_path)
    selection = leaderboard_selection("custom_cnn")
    run_config = leaderboard_run_config("custom_cnn", selection, epochs=1, warmup_epochs=0.5)
    board_config = tmp_path / "board.yaml"
    board_config.write_text(yaml.safe_dump(run_config))
    monkeypatch.setenv("DAGSTER_HOME", str(setup.home))

    def materialize(keys: list[str], floor: float) -> None:
        resources = default_resources(str(setup.data))
        resources["quality"] = QualityGates(accuracy={"sample/*": floor})
        defs = build_definitions(resources)
        with setup.instance() as instance:
            dg.materialize(
                [*defs.assets, *defs.asset_checks],
                selection=dg.AssetSelection.assets(*keys),
                resources=resources,
                run_config={"ops": {k: v for k, v in run_config["ops"].items() if k in keys}},
                instance=instance,
                raise_on_error=False,
            )
        while mlflow.active_run() is not None:
            mlflow.end_run()

    materialize(selection, floor=0.0)  # every model, every evaluation, the leaderboard
    client = mlflow.MlflowClient(setup.tracking_uri)
    assert str(client.get_model_version_by_alias("food_assets.custom_cnn", CHAMPION).version) == "1"
    materialize(["evaluation_custom_cnn"], floor=1.01)  # its blocking check fails now

    marker = tmp_path / "marker"
    args = setup.cli("run", "--select", "leaderboard", "-c", str(board_config))
    argv = [sys.executable, "-c", CLI_THAT_HANGS_AT, str(marker),
            "food_assets.tracking.runs:tag_candidates", "after", *args]  # fmt: skip
    with _process(argv, setup.env(), tmp_path / "killed.log") as proc:
        _wait_for(marker, proc)
        _kill(proc)
    assert _registry_problems(client) == []
    with setup.instance() as instance:
        (dead,) = [r for r in instance.get_runs() if r.status.value == "STARTED"]

    start = time.monotonic()
    rerun = CliRunner().invoke(app, args)
    took = time.monotonic() - start
    assert rerun.exit_code == 0, rerun.output[-3000:]
    # The recovery's line goes to the terminal (file descriptor 2), past the CLI's log file.
    assert f"recovered run {dead.run_id}" in capfd.readouterr().err
    _assert_nothing_left_behind(setup, dead.run_id)
    assert _registry_problems(client) == []
    assert CHAMPION not in client.get_registered_model("food_assets.custom_cnn").aliases
    assert client.get_model_version("food_assets.custom_cnn", "1").tags["accuracy_check"] == (
        "failed"
    )
    assert took < 120, took


# -- the tracking server goes away mid-run -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _mlflow_server(root: Path, port: int, log: Path) -> Iterator[subprocess.Popen]:
    """A real `mlflow server` on 127.0.0.1:`port` (SQLite backend, proxied artifacts under
    `root`), in its own process group; SIGKILLed with its workers on exit."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job workers
    argv = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"), "--workers", "1"]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        _stop_server(proc)


def _stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its uvicorn worker
        proc.wait(timeout=30)


def test_server_errors_names_the_unreachable_server_and_lets_other_mlflow_errors_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real MLflow call to a port where nothing listens becomes one `TrackingServerError`
    line naming the server (password masked), a `FoodAssetsError` (so `user_errors` fails the
    step without a retry); an MLflow error that is not a lost connection passes through as it
    is. Breakage tried: `server_unreachable` following `__cause__` only (MLflow raises its
    exception while handling the connection error, without `from`: the first case fails);
    every `MlflowException` taken for a lost server (the second case fails)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from food_assets.ml.errors import FoodAssetsError
    from food_assets.tracking import runs as tracking

    port = _free_port()  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(f"http://food:s3cret-pw@127.0.0.1:{port}")  # restored by the fixture
    with pytest.raises(tracking.TrackingServerError) as caught, tracking.server_errors():
        mlflow.MlflowClient().search_experiments()
    message = str(caught.value)
    assert message.startswith(
        f"the MLflow tracking server http://food:***@127.0.0.1:{port} did not answer"
    )
    assert "\n" not in message and "s3cret-pw" not in message
    assert isinstance(caught.value, FoodAssetsError)

    with pytest.raises(MlflowException) as other, tracking.server_errors():
        try:
            raise ValueError("a bad parameter")
        except ValueError:
            raise MlflowException("Run 'x' not found") from None
    assert not isinstance(other.value, tracking.TrackingServerError)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_tracking_server_going_away_mid_training_fails_in_one_line_and_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The team setup's `mlflow server` (here on loopback, its URI with a password) is SIGKILLed
    while `model_custom_cnn` trains its second epoch, after the first checkpoint. The step fails
    within a bounded time with one line naming the server (password masked) and is not retried;
    `last.ckpt` stays. With the server started again, the same materialization resumes at epoch
    1, finishes, and the first run's MLflow runs are ended FAILED (none RUNNING). The password
    is in nothing printed. Breakage tried: no HTTP bounds (MLflow's 7 retries per call: the
    step failed 758 s after the kill); `server_errors` removed from the model asset (the retry
    policy ran the step twice more, 30 s and 60 s later: "Exceeded max_retries of 2"); no
    `redact_logs` (MLflow's system-metrics warning prints the URL with the password); MLflow's
    "View run at <URL>" lines left on (they print it too)."""
    import dagster as dg
    import lightning.pytorch as pl
    import mlflow
    import pandas as pd

    import food_assets.ml.training.fit as training_fit
    from food_assets.definitions import build_definitions, default_resources
    from food_assets.defs.resources import food_mlflow
    from food_assets.launcher import failure_reasons

    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_TRACKING_URI"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)  # the project's bounds, not a leftover's
    port, server_dir, log = _free_port(), tmp_path / "server", tmp_path / "server.log"
    uri = f"http://food:s3cret-pw@127.0.0.1:{port}"
    data = tmp_path / "data"
    resources = default_resources(str(data))
    resources["mlflow"] = food_mlflow.configured(
        {"experiment_name": "food_assets", "mlflow_tracking_uri": uri}
    )
    defs = build_definitions(resources)
    keys = ["food_images_raw", "food_splits", "model_custom_cnn"]
    ops = tiny_run_config(custom_cnn={"epochs": 2, "warmup_epochs": 0.5})["ops"]
    instance = dg.DagsterInstance.ephemeral()

    def materialize() -> dg.ExecuteInProcessResult:
        try:
            return dg.materialize(
                [*defs.assets, *defs.asset_checks],
                selection=dg.AssetSelection.assets(*keys),
                resources=resources,
                run_config={"ops": {k: v for k, v in ops.items() if k in keys}},
                instance=instance,
                raise_on_error=False,
            )
        finally:
            while mlflow.active_run() is not None:
                with contextlib.suppress(Exception):
                    mlflow.end_run()

    killed_at: list[float] = []
    with _mlflow_server(server_dir, port, log) as server:

        class ServerGoesAway(pl.Callback):
            def on_train_epoch_start(self, trainer, pl_module) -> None:
                if trainer.current_epoch == 1 and not killed_at:
                    _stop_server(server)
                    killed_at.append(time.monotonic())

        real_train_model = training_fit.train_model

        def train_model(*a, callbacks=(), **kw):
            return real_train_model(*a, callbacks=[*callbacks, ServerGoesAway()], **kw)

        monkeypatch.setattr(training_fit, "train_model", train_model)
        failed = materialize()
        monkeypatch.setattr(training_fit, "train_model", real_train_model)
    took = time.monotonic() - killed_at[0]
    assert not failed.success
    (reason,) = failure_reasons(failed)
    assert reason.startswith(
        f"model_custom_cnn failed: the MLflow tracking server http://food:***@127.0.0.1:{port} "
        "did not answer"
    ), reason
    assert "\n" not in reason and "s3cret-pw" not in reason
    retried = [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retried == []
    ckpt = data / "artifacts" / "model_custom_cnn" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    assert took < 60, took

    with _mlflow_server(server_dir, port, log):
        again = materialize()
        assert again.success, failure_reasons(again)
        meta = again.asset_materializations_for_node("model_custom_cnn")[-1].metadata
        assert meta["resumed"].value is True and meta["resumed_from_epoch"].value == 1
        history = pd.read_parquet(data / "artifacts" / "model_custom_cnn" / "history.parquet")
        assert list(history["epoch"]) == [0, 1]
        client = mlflow.MlflowClient(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        assert list(client.search_runs(ids, "attributes.status = 'RUNNING'")) == []
        first = client.search_runs(ids, f"tags.dagster_run_id = '{failed.run_id}'")
        assert sorted(r.info.status for r in first) == ["FAILED", "FAILED"]
    printed = capfd.readouterr()
    assert "s3cret-pw" not in printed.out + printed.err
