"""Runs whose process died: find them, mark them failed, free their pool slots, end their MLflow
runs (ADR 0025).

A run killed with SIGKILL (the out-of-memory killer, `kill -9`, a lost machine) never reports
its end: Dagster keeps it STARTED forever and keeps the `gpu` pool slot it held, so every later
pooled step waits for ever; its MLflow runs stay RUNNING. `reap_stale_runs` puts that right.
It is called when a run starts (`food-assets train|evaluate|export`, `make run`, `python -m
food_assets.defs.recovery` before a `dg launch`) and while a step waits for a slot (`food_assets.
run_guard`).

A run's process is known from the tags the launcher adds (`owner_tags`: pid, host, process
start time), else from the pid Dagster's executor records in the run's first engine event
("Executing steps in process (pid: N)"). A run is stale only when that process is provably gone
from *this* host: a pid that no longer exists, or one reused by a process that started after the
run did. A run of another host (its host tag differs), or one without a host tag on an instance
that is not SQLite (SQLite storage is one machine's), is never touched: Dagster's run monitoring
(`dagster.yaml`) covers those. Public Dagster and MLflow API only.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Run tags the launcher adds at launch: who runs it (pid, host) and when that process started,
#: so that a pid reused by a later process is not taken for the run's.
PID_TAG = "food_assets/pid"
HOST_TAG = "food_assets/host"
PROCESS_START_TAG = "food_assets/process_start"
#: The MLflow run tag that ties a run to its Dagster run (dagster-mlflow's and the model runs').
DAGSTER_RUN_ID_TAG = "dagster_run_id"
#: The MLflow tag on a run this module ended, saying why.
ENDED_BY_TAG = "food_assets/ended_by"
#: A pid whose process started this much later than the run is another process (seconds).
PID_REUSE_SLACK_S = 2.0


def this_host() -> str:
    return socket.gethostname()


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def owner_tags() -> dict[str, str]:
    """The run tags that say this process runs it (pid, host, process start time)."""
    start = _process_start(os.getpid())
    return {
        PID_TAG: str(os.getpid()),
        HOST_TAG: this_host(),
        PROCESS_START_TAG: f"{start:.3f}" if start is not None else "",
    }


@dataclass(frozen=True)
class RunOwner:
    """The process that runs (or ran) a Dagster run.

    Attributes:
        pid: its process id.
        host: the host it runs on (None: not recorded; only the pid is known).
        process_start: its start time (epoch seconds), when recorded.
    """

    pid: int
    host: str | None = None
    process_start: float | None = None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host or 'this host'}"


def run_owner(instance: Any, run: Any) -> RunOwner | None:
    """The process of `run`: the launcher's tags, else the pid of Dagster's first engine event
    that records one (the orchestrating process, in-process or multiprocess). None: unknown."""
    tags = run.tags or {}
    if tags.get(PID_TAG, "").isdigit():
        start = tags.get(PROCESS_START_TAG) or ""
        return RunOwner(
            int(tags[PID_TAG]),
            tags.get(HOST_TAG) or None,
            float(start) if start.replace(".", "", 1).isdigit() else None,
        )
    import dagster as dg

    records = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=20
    ).records
    for record in records:
        data = record.event_log_entry.dagster_event.event_specific_data
        pid = getattr(data, "metadata", {}).get("pid") if data is not None else None
        value = getattr(pid, "value", pid)
        if isinstance(value, str) and value.isdigit():
            return RunOwner(int(value), tags.get(HOST_TAG) or None)
    return None


def _is_local(instance: Any, owner: RunOwner) -> bool:
    """Whether `owner`'s pid can be checked here: its host is this one, or no host was recorded
    and the instance's run storage is SQLite (one machine's)."""
    if owner.host is not None:
        return owner.host == this_host()
    return "sqlite" in type(instance.run_storage).__name__.lower()


def is_gone(owner: RunOwner, run_start: float | None) -> bool:
    """Whether the process is provably gone from this host: no such pid, a zombie, or a pid
    reused by a process that started after the run's own (by its start tag, else the run's
    start time)."""
    started = _process_start(owner.pid)
    if started is None:
        return True
    if owner.process_start is not None:
        return abs(started - owner.process_start) > PID_REUSE_SLACK_S
    return run_start is not None and started > run_start + PID_REUSE_SLACK_S


@dataclass(frozen=True)
class Reaped:
    """A run this module marked failed (or a finished run whose slots it freed)."""

    run_id: str
    reason: str
    freed_slots: int
    mlflow_runs: tuple[str, ...] = ()


def stale_reason(owner: RunOwner, who: str) -> str:
    return (
        f"the run's process ({owner.describe()}) no longer exists: it was killed (SIGKILL, out "
        f"of memory, a lost machine) without ending the run; marked failed and its pool slots "
        f"freed by {who}"
    )


def reap_stale_runs(
    instance: Any,
    *,
    tracking_uri: str | None = None,
    who: str = "food_assets.defs.recovery",
    log: Callable[[str], None] | None = None,
) -> list[Reaped]:
    """Mark failed every STARTED run of `instance` whose process is gone from this host, free
    the pool slots of those and of any finished run that still holds one, and end their MLflow
    runs left RUNNING (`end_orphan_mlflow_runs`, when `tracking_uri` is given).

    Args:
        instance: the Dagster instance.
        tracking_uri: the MLflow store the runs log to (None: leave MLflow alone).
        who: names the caller in the failure message (`food-assets train`, ...).
        log: called with one line per run reaped.

    Returns:
        What was done, one entry per run.
    """
    import dagster as dg
    from dagster._core.storage.dagster_run import FINISHED_STATUSES

    reaped: list[Reaped] = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        run = record.dagster_run
        owner = run_owner(instance, run)
        if owner is None or not _is_local(instance, owner):
            continue
        if not is_gone(owner, record.start_time):
            continue
        reason = stale_reason(owner, who)
        fresh = instance.get_run_by_id(run.run_id)  # it may have ended since the query
        if fresh is None or fresh.status != dg.DagsterRunStatus.STARTED:
            continue
        instance.report_run_failed(fresh, message=reason)
        reaped.append(Reaped(run.run_id, reason, free_slots(instance, run.run_id)))
    # A finished run never needs a slot: free what one still holds (Dagster's daemon does this
    # after `free_slots_after_run_end_seconds`; a launch need not wait for it).
    if instance.event_log_storage.supports_global_concurrency_limits:
        holding = instance.event_log_storage.get_concurrency_run_ids()
        done = {r.run_id for r in reaped}
        for run_id in sorted(holding - done):
            run = instance.get_run_by_id(run_id)
            if run is not None and run.status in FINISHED_STATUSES:
                freed = free_slots(instance, run_id)
                reaped.append(Reaped(run_id, f"run already {run.status.value}", freed))
    if tracking_uri:
        ended = end_orphan_mlflow_runs(instance, tracking_uri)
        known = {r.run_id for r in reaped}
        reaped = [
            dataclasses.replace(r, mlflow_runs=tuple(ended.get(r.run_id, ()))) for r in reaped
        ]
        reaped += [
            Reaped(run_id, "an ended run's MLflow runs were still RUNNING", 0, tuple(ids))
            for run_id, ids in ended.items()
            if run_id not in known
        ]
    for r in reaped:
        if log is not None:
            log(
                f"recovered run {r.run_id}: {r.reason}"
                + (f"; freed {r.freed_slots} pool slot(s)" if r.freed_slots else "")
                + (f"; ended {len(r.mlflow_runs)} MLflow run(s)" if r.mlflow_runs else "")
            )
    return reaped


def free_slots(instance: Any, run_id: str) -> int:
    """Free every pool slot `run_id` holds or waits for; returns how many it held (the storage's
    own count is not returned by every backend)."""
    storage = instance.event_log_storage
    held = sum(
        1
        for key in storage.get_concurrency_keys()
        for slot in storage.get_concurrency_info(key).claimed_slots
        if slot.run_id == run_id
    )
    storage.free_concurrency_slots_for_run(run_id)
    return held


def end_orphan_mlflow_runs(instance: Any, tracking_uri: str) -> dict[str, list[str]]:
    """End the MLflow runs left RUNNING by a Dagster run of `instance` that has ended (found by
    their `dagster_run_id` tag): FAILED for a failed run, KILLED for a cancelled one, FINISHED
    for a successful one. Runs of a live Dagster run, or of one this instance does not know,
    are left alone. Returns the ended MLflow run ids by Dagster run id."""
    import dagster as dg
    import mlflow
    from dagster._core.storage.dagster_run import FINISHED_STATUSES
    from mlflow.exceptions import MlflowException

    status_for = {
        dg.DagsterRunStatus.SUCCESS: "FINISHED",
        dg.DagsterRunStatus.FAILURE: "FAILED",
        dg.DagsterRunStatus.CANCELED: "KILLED",
    }
    from food_assets.tracking.model_registry import bound_http_waits

    bound_http_waits()  # a tracking server that is down costs seconds here, not minutes
    client = mlflow.MlflowClient(tracking_uri)
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        running = (
            client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000)
            if experiments
            else []
        )
    except MlflowException:
        return {}  # an empty or unreachable store: nothing of ours to end
    ended: dict[str, list[str]] = {}
    for mlflow_run in running:
        dagster_run_id = mlflow_run.data.tags.get(DAGSTER_RUN_ID_TAG)
        run = instance.get_run_by_id(dagster_run_id) if dagster_run_id else None
        if run is None or run.status not in FINISHED_STATUSES:
            continue
        status = status_for.get(run.status, "FAILED")
        why = f"Dagster run {dagster_run_id} ended {run.status.value} without ending this run"
        try:
            client.set_tag(mlflow_run.info.run_id, ENDED_BY_TAG, why)
            client.set_terminated(
                mlflow_run.info.run_id, status=status, end_time=int(time.time() * 1000)
            )
        except MlflowException:
            continue  # deleted meanwhile, or the store went away: the next look tries again
        ended.setdefault(dagster_run_id, []).append(mlflow_run.info.run_id)
    return ended


def main(argv: list[str] | None = None) -> int:
    """`python -m food_assets.defs.recovery [DATA_DIR]`: reap on the instance at DAGSTER_HOME (what
    `make run` does before `dg launch`); prints one line per run recovered. MLflow: the store
    the code location logs to (MLFLOW_TRACKING_URI, else `<DATA_DIR>/mlflow/mlflow.db`)."""
    import warnings
    from pathlib import Path

    import dagster as dg

    from food_assets import layout
    from food_assets.storage import default_data_dir

    args = sys.argv[1:] if argv is None else argv
    data_dir = Path(args[0] if args else default_data_dir()).expanduser().resolve()
    db = layout.mlflow_dir(data_dir) / "mlflow.db"
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (f"sqlite:///{db}" if db.is_file() else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dg.DagsterInstance.get() as instance:
            reap_stale_runs(
                instance,
                tracking_uri=uri,
                who="food_assets.defs.recovery",
                log=lambda line: print(line, file=sys.stderr),
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
