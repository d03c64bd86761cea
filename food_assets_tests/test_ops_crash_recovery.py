"""Crash safety at the run level (issue #29, ADR 0025): a run killed while it holds the `gpu`
pool slot never blocks the next one, Ctrl-C / SIGTERM cancel cleanly (also while waiting for a
slot), and no MLflow run is left RUNNING by a dead process.

Every test drives real `food-assets` processes on a persistent Dagster instance whose
`dagster.yaml` is the project's own (pools with one slot, run monitoring) and kills them with
real signals at a point they announce by writing a marker file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from food_assets_tests.conftest import tiny_run_config
from food_assets_tests.test_ops_faults import REPO, WAIT_S, _child_env, _kill, _wait_for

pytestmark = [
    pytest.mark.usefixtures("mlflow_isolated"),
    # Lightning 2.6's own _pytree helper calls a torch 2.14 API that warns; not our code.
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
]

#: `food-assets` with a training step that stalls at a chosen point after writing a marker:
#: the stand-in for a run that is running when the signal comes. argv: marker, hang epoch,
#: then the CLI's own arguments.
CLI_THAT_HANGS = r"""
import sys, time
from pathlib import Path
import lightning.pytorch as pl
import food_assets.ml.training.fit as training_fit

marker, hang_epoch = Path(sys.argv[1]), int(sys.argv[2])
real_train_model = training_fit.train_model

class HangInEpoch(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == hang_epoch and batch_idx == 1:
            marker.write_text(str(trainer.current_epoch))
            time.sleep(600)

def train_model(*a, callbacks=(), **kw):
    return real_train_model(*a, callbacks=[*callbacks, HangInEpoch()], **kw)

training_fit.train_model = train_model
sys.argv = ["food-assets", *sys.argv[3:]]
from food_assets.cli import main
main()
"""


class Setup:
    """A data folder, a DAGSTER_HOME with the project's dagster.yaml, a tiny run config."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.home = root / "home"
        self.home.mkdir(parents=True)
        config = yaml.safe_load((REPO / "dagster.yaml").read_text())
        for key in ("storage", "local_artifact_storage", "compute_logs"):
            section = config[key]
            inner = section.get("sqlite") or section.get("config")
            inner["base_dir"] = str(self.home / key)
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(config))
        ops = tiny_run_config(custom_cnn={"epochs": 2, "warmup_epochs": 0.5})["ops"]
        wanted = ("food_images_raw", "model_custom_cnn", "evaluation_custom_cnn")
        self.config = root / "run.yaml"
        self.config.write_text(yaml.safe_dump({"ops": {k: ops[k] for k in wanted}}))

    def env(self) -> dict[str, str]:
        return _child_env(DAGSTER_HOME=str(self.home))

    def cli(self, *args: str) -> list[str]:
        return ["--data-dir", str(self.data), *args]

    @contextlib.contextmanager
    def instance(self) -> Iterator[object]:
        import dagster as dg

        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            yield instance

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.data / 'mlflow' / 'mlflow.db'}"


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A child whose output goes to `log` (read it while it runs); SIGKILLed if still alive."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def _hanging_cli(setup: Setup, marker: Path, hang_epoch: int, log: Path, *args: str):
    argv = [sys.executable, "-c", CLI_THAT_HANGS, str(marker), str(hang_epoch), *setup.cli(*args)]
    return _process(argv, setup.env(), log)


def _wait_for_text(log: Path, text: str, proc: subprocess.Popen, timeout: float = WAIT_S) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = log.read_text(errors="replace") if log.exists() else ""
        if text in content:
            return content
        if proc.poll() is not None:
            pytest.fail(f"child exited ({proc.returncode}) before printing {text!r}:\n{content}")
        if time.monotonic() > deadline:
            pytest.fail(f"child did not print {text!r} within {timeout} s:\n{content[-3000:]}")
        time.sleep(0.1)


def _runs(instance) -> dict[str, object]:
    return {r.run_id: r for r in instance.get_runs()}


def _gpu_pool(instance):
    return instance.event_log_storage.get_concurrency_info("gpu")


def _running_mlflow_runs(uri: str) -> list[object]:
    import mlflow

    client = mlflow.MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids, "attributes.status = 'RUNNING'")) if ids else []


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_run_sigkilled_holding_the_gpu_slot_is_reaped_and_training_resumes(
    tmp_path: Path,
) -> None:
    """The issue's scenario: `food-assets train` SIGKILLed in its second epoch (after the first
    checkpoint) while its step holds the pool's only slot. Before: the run stays STARTED with
    the slot and its MLflow runs RUNNING. The same command again: the dead run is marked failed
    with the reason, its slot freed, its MLflow runs ended FAILED, and training resumes at
    epoch 1 and finishes. Breakage tried: no reaping at launch nor in the guard (the rerun
    waits until the test's timeout); a reaper that ignores the pid check (it would reap the
    live holder in `test_sigterm_...`)."""
    setup = Setup(tmp_path)
    marker = tmp_path / "hanging"
    train = ("train", "custom_cnn", "-c", str(setup.config))
    with _hanging_cli(setup, marker, 1, tmp_path / "killed.log", *train) as proc:
        _wait_for(marker, proc)
        _kill(proc)

    with setup.instance() as instance:
        (dead,) = _runs(instance).values()
        assert dead.status.value == "STARTED"
        assert [s.run_id for s in _gpu_pool(instance).claimed_slots] == [dead.run_id]
    assert {r.data.tags["dagster_run_id"] for r in _running_mlflow_runs(setup.tracking_uri)} == {
        dead.run_id
    }

    log = tmp_path / "rerun.log"
    argv = [sys.executable, "-m", "food_assets.cli", *setup.cli(*train)]
    start = time.monotonic()
    with _process(argv, setup.env(), log) as rerun:
        assert rerun.wait(timeout=300) == 0, log.read_text()[-3000:]
    took = time.monotonic() - start
    out = log.read_text()
    assert f"recovered run {dead.run_id}: the run's process (pid " in out
    assert "freed 1 pool slot(s); ended 2 MLflow run(s)" in out

    with setup.instance() as instance:
        runs = _runs(instance)
        assert runs[dead.run_id].status.value == "FAILURE"
        (new_id,) = set(runs) - {dead.run_id}
        assert runs[new_id].status.value == "SUCCESS"
        failure = instance.get_records_for_run(dead.run_id, of_type=_failure_type()).records
        assert "no longer exists" in failure[-1].event_log_entry.dagster_event.message
        pool = _gpu_pool(instance)
        assert pool.claimed_slots == [] and pool.pending_steps == []
        meta = instance.get_latest_materialization_event(_key("model_custom_cnn"))
        meta = meta.asset_materialization.metadata
    assert meta["resumed"].value is True and meta["resumed_from_epoch"].value == 1
    history = pd.read_parquet(setup.data / "artifacts" / "model_custom_cnn" / "history.parquet")
    assert list(history["epoch"]) == [0, 1]
    assert _running_mlflow_runs(setup.tracking_uri) == []
    import mlflow

    client = mlflow.MlflowClient(setup.tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    ended = client.search_runs(ids, f"tags.dagster_run_id = '{dead.run_id}'")
    assert sorted(r.info.status for r in ended) == ["FAILED", "FAILED"]
    assert all("ended FAILURE without ending this run" in r.data.tags[
        "food_assets/ended_by"] for r in ended)  # fmt: skip
    assert took < 300


def _failure_type():
    import dagster as dg

    return dg.DagsterEventType.RUN_FAILURE


def _key(name: str):
    import dagster as dg

    return dg.AssetKey(name)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_sigterm_cancels_a_waiting_run_at_once_and_stops_a_running_step_without_retry(
    tmp_path: Path,
) -> None:
    """Two real `food-assets train` processes on one `gpu` slot. The waiter says which run
    holds the slot, with the holder's pid and the command to cancel it; SIGTERM to the waiter
    cancels it within seconds (exit 130, run CANCELED, no claim left) while the live holder
    keeps its slot. SIGTERM to the holder, mid-step, stops it: the step fails with the
    interrupt's message and is not retried (the retry policy would otherwise restart it after
    30 s, slot held), and the slot is free. Breakage tried: the guard disabled (the waiter
    ignores SIGTERM until the test's timeout); interrupts left to the retry policy (the holder
    run is still STARTED, restarting its step, when checked)."""
    setup = Setup(tmp_path)
    marker = tmp_path / "hanging"
    train = ("train", "custom_cnn", "-c", str(setup.config))
    holder_log, waiter_log = tmp_path / "holder.log", tmp_path / "waiter.log"
    with _hanging_cli(setup, marker, 0, holder_log, *train) as holder:
        _wait_for(marker, holder)
        with setup.instance() as instance:
            (held,) = _runs(instance).values()
        argv = [sys.executable, "-m", "food_assets.cli", *setup.cli(*train)]
        with _process(argv, setup.env(), waiter_log) as waiter:
            out = _wait_for_text(waiter_log, "waits for a slot of pool gpu", waiter)
            assert (
                f"model_custom_cnn waits for a slot of pool gpu, held by run {held.run_id} "
                f"(food-assets train), pid {holder.pid} on "
            ) in out
            assert f"cancel it with `kill {holder.pid}` on " in out
            sent = time.monotonic()
            os.kill(waiter.pid, signal.SIGTERM)
            assert waiter.wait(timeout=60) == 130, waiter_log.read_text()[-3000:]
        cancel_s = time.monotonic() - sent
        with setup.instance() as instance:
            runs = _runs(instance)
            (waited,) = set(runs) - {held.run_id}
            assert runs[waited].status.value == "CANCELED"
            pool = _gpu_pool(instance)
            assert [(s.run_id, s.step_key) for s in pool.claimed_slots] == [
                (held.run_id, "model_custom_cnn")
            ]
            assert {p.run_id for p in pool.pending_steps} == {held.run_id}
            assert runs[held.run_id].status.value == "STARTED"

        os.kill(holder.pid, signal.SIGTERM)
        assert holder.wait(timeout=120) == 1, holder_log.read_text()[-3000:]
    assert "interrupted (Ctrl-C or SIGTERM): stopped, not retried" in holder_log.read_text()
    with setup.instance() as instance:
        assert _runs(instance)[held.run_id].status.value == "FAILURE"
        pool = _gpu_pool(instance)
        assert pool.claimed_slots == [] and pool.pending_steps == []
    assert _running_mlflow_runs(setup.tracking_uri) == []
    assert cancel_s < 30, cancel_s
