"""`food-assets run`: materialize the asset graph (by default all of it) in one Dagster run.

What `make run` calls. The same job `dg launch --assets '*' --config FILE` runs, in process on
the persistent instance (so the UI shows it), through `food_assets.launcher`; what differs is the
terminal. While the run goes: one line per step (`food_assets.cli.progress`). Everything else
the run prints (Dagster's event log at DEBUG, Lightning, MLflow, warnings from libraries) goes
to a log file, `<data dir>/logs/<time>.log`. At the end: the summary (`food_assets.cli.summary`).
`--verbose` prints Dagster's own event log on the terminal instead of the step lines, as
`dg launch` does; so does a run config that names its own `loggers`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from food_assets.cli.common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    UserError,
    data_dir,
    user_errors,
)

Select = Annotated[
    str,
    typer.Option(
        "--select",
        "-s",
        help="Dagster asset selection ('*' everything, 'key:model_*', '+evaluation_custom_cnn').",
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="A Dagster run-config YAML (configs/sample.yaml)."),
]
Verbose = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Print Dagster's full event log instead of step lines."),
]


@user_errors
def run(
    ctx: typer.Context,
    config: ConfigFile = None,
    select: Select = "*",
    verbose: Verbose = False,
) -> None:
    """Materialize the asset graph in one run: a line per step, then the leaderboard, the
    champion, the checks that did not pass and what to run next."""
    import warnings

    with warnings.catch_warnings():
        # dagster-mlflow's beta notices are not for users (pyproject ignores them in tests).
        warnings.filterwarnings("ignore", message=".*is currently in beta.*")
        warnings.filterwarnings("ignore", message=".*is currently in preview.*")
        _run(ctx, config, select, verbose)


def _run(ctx: typer.Context, config: Path | None, select: str, verbose: bool) -> None:
    import dagster as dg

    from food_assets import launcher
    from food_assets.cli import summary
    from food_assets.cli.progress import step_logger
    from food_assets.tracking.model_registry import mlflow_tracking_uri

    root = data_dir(ctx)
    run_config = launcher.load_run_config(config)
    defs = launcher.load_definitions(root)
    graph = defs.resolve_asset_graph()
    try:
        selected = dg.AssetSelection.from_string(select).resolve(graph)
    except Exception as exc:  # Dagster's parser raises several types; all are a bad selection
        raise UserError(f"--select {select!r} is not a valid asset selection: {exc}") from None
    # A partitioned asset (batch_predictions: one partition per drop of photos) runs per
    # partition, from its sensor or `dg launch --partition`; a run of the graph names none.
    partitioned = {k for k in selected if graph.get(k).is_partitioned}
    selected = set(selected) - partitioned
    if partitioned:
        names = ", ".join(sorted(k.to_user_string() for k in partitioned))
        typer.echo(
            f"not in this run: {names} (one run per drop: the new_drops sensor, or "
            "`dg launch --assets batch_predictions --partition <drop>`)",
            err=True,
        )
    if not selected:
        raise UserError(f"--select {select!r} matches no asset (`dg list defs` lists them)")
    _trim_ops(run_config, {k.to_user_string() for k in selected}, graph, config)
    launcher.validate_op_config(defs, run_config.get("ops") or {})
    own_loggers = "loggers" in run_config
    quiet = not (verbose or own_loggers)
    if quiet:
        # Dagster's console logger writes the full event log to the log file (stderr is the
        # file during the run); the step lines go to the terminal.
        run_config["loggers"] = {
            "console": {"config": {"log_level": "DEBUG"}},
            "food_assets_steps": {},
        }
    plan = launcher.RunPlan(
        target=max(selected, key=lambda k: k.to_user_string()),  # unused by `execute`
        selected=frozenset(selected),
        reused=[],
        ignored_config=[],
        run_config=run_config,
    )
    log_path = root / "logs" / time.strftime("run_%Y%m%d_%H%M%S.log")
    commands = tuple(c.name or "" for c in ctx.find_root().command.commands.values())  # type: ignore[attr-defined]
    with launcher.open_instance(root) as instance:
        typer.echo(
            f"materializing {len(selected)} assets; Dagster instance: {_home(root)}"
            + (f"; full log: {_shown(log_path)}" if quiet else ""),
            err=True,
        )
        t0 = time.perf_counter()
        tracking_uri = mlflow_tracking_uri(str(root))
        if not quiet:
            result = launcher.execute(
                defs, plan, instance, tags=_tags(select), tracking_uri=tracking_uri
            )
            log = None
        else:
            with _output_to(log_path) as terminal:
                result = launcher.execute(
                    defs,
                    plan,
                    instance,
                    tags=_tags(select),
                    loggers={"food_assets_steps": step_logger(terminal)},
                    tracking_uri=tracking_uri,
                    # the recovery's and the run guard's lines (who holds a slot) stay visible
                    echo=lambda line: print(line, file=terminal, flush=True),
                )
            log = _shown(log_path)
        outcome = summary.collect(
            result,
            seconds=time.perf_counter() - t0,
            log_path=log,
            mlflow_uri=_short_uri(mlflow_tracking_uri(str(root))),
            program=_program(),
            commands=commands,
        )
    sys.stdout.write("\n".join(summary.render(outcome)) + "\n")
    sys.stdout.flush()
    if launcher.was_cancelled(instance, result.run_id):
        raise typer.Exit(EXIT_CANCELLED)
    if not outcome.success:
        raise typer.Exit(EXIT_FAILED)


def _tags(select: str) -> dict[str, str]:
    return {"food_assets/cli": "run", "food_assets/select": select}


def _trim_ops(run_config: dict[str, Any], names: set[str], graph: Any, config: Path | None) -> None:
    """Drop config for assets outside the selection (Dagster rejects it); a name that is no
    asset at all is a typo and an error."""
    ops = run_config.get("ops") or {}
    known = {k.to_user_string() for k in graph.get_all_asset_keys()}
    unknown = sorted(set(ops) - known)
    if unknown:
        raise UserError(
            f"{config}: no asset named {', '.join(unknown)} (`dg list defs` lists them)"
        )
    if ops:
        run_config["ops"] = {k: v for k, v in ops.items() if k in names}
        if not run_config["ops"]:
            del run_config["ops"]


def _shown(path: Path) -> str:
    """`path` relative to the current folder when it is under it (shorter to read and copy)."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(os.getcwd()))
    except ValueError:
        return str(path)


def _home(root: Path) -> str:
    """The folder of the instance's dagster.yaml, as `launcher.open_instance` chooses it."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        path = Path(home)
    elif (Path.cwd() / "dagster.yaml").is_file():
        path = Path.cwd()
    else:
        path = root / "dagster_home"
    shown = _shown(path)
    return str(path.resolve()) if shown == "." else shown


def _short_uri(uri: str) -> str:
    """A `sqlite:///` URI with its path relative to the current folder when it is under it."""
    from food_assets.tracking.redact import redact_uri

    prefix = "sqlite:///"
    return prefix + _shown(Path(uri[len(prefix) :])) if uri.startswith(prefix) else redact_uri(uri)


def _program() -> str:
    """How the user called us (`.venv/bin/food-assets`), for the next commands."""
    exe = Path(sys.argv[0])
    if exe.name != "food-assets":
        return "food-assets"
    # As typed when relative (`.venv/bin/food-assets` from the Makefile; resolving it would
    # follow a symlinked .venv out of the project).
    return _shown(exe) if exe.is_absolute() else sys.argv[0]


@contextlib.contextmanager
def _output_to(log_path: Path) -> Iterator[TextIO]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C++ and subprocess
    output too) to `log_path`; yield a stream on the original stderr, the terminal."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_err), "w", buffering=1)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()
