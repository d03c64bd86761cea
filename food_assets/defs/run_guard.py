"""A watcher beside an in-process run: who holds the pool slot a step waits for, dead holders
freed, and Ctrl-C / SIGTERM honoured while waiting (ADR 0025).

Dagster's in-process executor waits for a pool slot in a loop that never looks at signals:
during a run Dagster turns SIGTERM into SIGINT and SIGINT into a flag that only a running step
acts on, so a run waiting for a slot ignores both (a `timeout 600` rerun was still waiting after
20 minutes). `RunGuard` is a thread that, every `interval` seconds while the run executes:

- when a step of the run waits for a slot, says once (then every `remind_s`) which run holds
  it, its process and how to cancel it; and reaps the holders whose process is gone
  (`food_assets.defs.recovery`), so the wait ends as soon as they are;
- when an interrupt has been pending for `grace_s` without Dagster acting on it (no step is
  running to raise it in), cancels the run: marks it CANCELING and raises Dagster's own
  interrupt in the main thread, so that Dagster unwinds as it does for a step (pending claims
  freed, run CANCELED; the launcher ends its MLflow runs KILLED). Should that not end the run
  in `unwind_s`, the guard frees the slots and reports CANCELED itself, then exits with 130
  (the shell's code for Ctrl-C). No step runs at that point, so nothing is half written.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from food_assets.defs import recovery

#: Exit status of a run cancelled while it waited for a slot (128 + SIGINT, as a shell reports).
EXIT_CANCELLED = 130
CANCEL_MESSAGE = "cancelled (Ctrl-C or SIGTERM) while no step was running"
#: Run statuses after which there is nothing to cancel.
FINISHED = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


def _interrupt_pending() -> bool:
    # Dagster's own flag: set by its handler for SIGINT (and SIGTERM, mapped to it) while a run
    # executes outside a step, cleared when a step raises it. Private, hence this one place.
    from dagster._utils.interrupts import check_captured_interrupt

    return check_captured_interrupt()


def holder_line(instance: Any, pool: str, step: str, holders: list[str]) -> str:
    """One line: `step` waits for `pool`, held by these runs (their process), how to cancel."""
    parts = []
    for run_id in holders:
        run = instance.get_run_by_id(run_id)
        owner = recovery.run_owner(instance, run) if run is not None else None
        what = (run.tags or {}).get("food_assets/cli") if run is not None else None
        desc = f"run {run_id}"
        if what:
            desc += f" (food-assets {what})"
        if owner is not None:
            host = owner.host or recovery.this_host()
            desc += f", {owner.describe()}: cancel it with `kill {owner.pid}` on {host}"
        else:
            desc += ": cancel it from the Dagster UI (Runs -> Terminate)"
        parts.append(desc)
    return f"{step} waits for a slot of pool {pool}, held by " + "; ".join(parts)


class RunGuard(threading.Thread):
    """Watches the run `run_id` on `instance` until `stop()`; see the module docstring.

    Args:
        instance: the Dagster instance the run executes on.
        run_id: the run's id (the launcher chooses it before the run starts).
        tracking_uri: the MLflow store, for ending the runs of reaped or cancelled runs.
        echo: prints one line (the CLI's stderr).
        interval: seconds between two looks.
        grace_s: how long an interrupt may stay pending before the guard cancels the run.
        remind_s: how often the waiting line is repeated.
        unwind_s: how long the main thread has to unwind a cancelled run.
        exit: what ends the process after a cancel (tests replace it).
    """

    def __init__(
        self,
        instance: Any,
        run_id: str,
        *,
        tracking_uri: str | None = None,
        echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
        interval: float = 0.5,
        grace_s: float = 2.0,
        remind_s: float = 60.0,
        unwind_s: float = 30.0,
        exit: Callable[[int], None] = os._exit,
    ) -> None:
        super().__init__(name=f"food_assets-run-guard-{run_id[:8]}", daemon=True)
        self.instance, self.run_id, self.tracking_uri = instance, run_id, tracking_uri
        self.echo, self.interval, self.grace_s, self.remind_s = echo, interval, grace_s, remind_s
        self.unwind_s = unwind_s
        self._exit = exit
        self._halt = threading.Event()
        self._told: dict[tuple[str, str], float] = {}

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=10)

    def run(self) -> None:
        pending_since: float | None = None
        while not self._halt.wait(self.interval):
            try:
                if _interrupt_pending():
                    pending_since = pending_since or time.monotonic()
                    if time.monotonic() - pending_since >= self.grace_s:
                        self.cancel()
                        return
                else:
                    pending_since = None
                self.watch_slots()
            except Exception as exc:  # never let the guard take the run down
                self.echo(f"warning: run guard: {type(exc).__name__}: {exc}")

    def waiting(self) -> list[tuple[str, str, list[str]]]:
        """(pool, step, holder run ids) for each step of this run that waits for a slot."""
        storage = self.instance.event_log_storage
        out = []
        for pool in sorted(storage.get_concurrency_keys()):
            info = storage.get_concurrency_info(pool)
            mine = [p.step_key for p in info.pending_steps
                    if p.run_id == self.run_id and p.assigned_timestamp is None]  # fmt: skip
            if mine:
                holders = sorted({s.run_id for s in info.claimed_slots} - {self.run_id})
                out.extend((pool, step, holders) for step in mine)
        return out

    def watch_slots(self) -> None:
        waiting = self.waiting()
        if not waiting:
            return
        recovery.reap_stale_runs(
            self.instance,
            tracking_uri=self.tracking_uri,
            who=f"run {self.run_id}, which waited for its slot",
            log=self.echo,
        )
        now = time.monotonic()
        for pool, step, holders in waiting:
            told = self._told.get((pool, step))
            if holders and (told is None or now - told >= self.remind_s):
                self._told[(pool, step)] = now
                self.echo(holder_line(self.instance, pool, step, holders))

    def cancel(self) -> None:
        """Cancel the run from outside its blocked loop: marked CANCELING, then interrupted in
        the main thread as Dagster's own handler would inside a step, so that Dagster unwinds it
        (pending claims freed, run CANCELED). Should the main thread not unwind within
        `unwind_s`, the guard does it from here and ends the process."""
        import ctypes

        import dagster as dg

        run = self.instance.get_run_by_id(self.run_id)
        if run is None or run.status.value in FINISHED:
            return
        self.instance.report_run_canceling(run, message=CANCEL_MESSAGE)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(threading.main_thread().ident),
            ctypes.py_object(dg.DagsterExecutionInterruptedError),
        )
        if self._halt.wait(self.unwind_s):
            return  # the launcher stopped the guard: the run has ended
        self.instance.event_log_storage.free_concurrency_slots_for_run(self.run_id)
        run = self.instance.get_run_by_id(self.run_id)
        if run is not None and run.status.value not in FINISHED:
            self.instance.report_run_canceled(run, message=CANCEL_MESSAGE)
        if self.tracking_uri:
            recovery.end_orphan_mlflow_runs(self.instance, self.tracking_uri)
        self.echo(f"run {self.run_id} cancelled; its pool slots are free")
        sys.stdout.flush()
        sys.stderr.flush()
        self._exit(EXIT_CANCELLED)
