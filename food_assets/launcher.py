"""Materialize one asset, plus whichever of its parents need it, in one in-process Dagster run.

What `food-assets train / evaluate / export` run, without the command line: no Typer, no
printing. The steps, in the order the CLI calls them (it prints between them):

1. `build_run_config`: a run-config YAML file with option overrides merged over it;
2. `load_definitions` and `require_asset`: the asset graph on a data folder, and the target;
3. `open_instance`: the persistent Dagster instance, so the run shows in `dagster dev`;
4. `plan_run`: which parents are reused and which run again (`RunPlan`), the run config
   trimmed to the assets that run;
5. `validate_op_config`: each asset's config against its `dg.Config` class, before anything runs;
6. `execute`: the run, in process; the result is Dagster's `ExecuteInProcessResult`
   (`failure_reasons` says why a failed one failed).

User mistakes raise `FoodAssetsError` subclasses (`ConfigError`, `LaunchError`) whose message
names the fix.
"""

from __future__ import annotations

import inspect
import os
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from food_assets.ml.errors import ConfigError, FoodAssetsError

#: The job the launcher's runs belong to (the name they show under in the Dagster UI).
CLI_JOB = "food_assets_cli"


class LaunchError(FoodAssetsError):
    """A run that cannot be launched as asked (an asset not in this build, config for none)."""


@dataclass(frozen=True)
class RunPlan:
    """What one run materializes and what it loads instead.

    Attributes:
        target: the asset asked for.
        selected: the target plus every parent that runs again.
        reused: parents loaded from the instance's storage (user strings, sorted).
        ignored_config: reused parents that the run config had config for (it is dropped).
        run_config: the run config, trimmed to the selected assets.
    """

    target: dg.AssetKey
    selected: frozenset[dg.AssetKey]
    reused: list[str]
    ignored_config: list[str]
    run_config: dict[str, Any]

    @property
    def names(self) -> list[str]:
        """The selected assets' names, sorted."""
        return sorted(k.to_user_string() for k in self.selected)


def load_run_config(path: Path | None) -> dict[str, Any]:
    """A Dagster run-config YAML file (`{ops: {<asset>: {config: ...}}}`); None: empty."""
    if path is None:
        return {}
    import yaml

    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path} as YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping ({{ops: {{<asset>: {{config: ...}}}}}})")
    return data


def build_run_config(
    config_file: Path | None, target: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The run config of `config_file` with `overrides` merged over the target's config."""
    run_config = load_run_config(config_file)
    if overrides:
        ops = run_config.setdefault("ops", {})
        op = ops.setdefault(target, {})
        op["config"] = {**(op.get("config") or {}), **overrides}
    return run_config


def load_definitions(data_dir: Path) -> dg.Definitions:
    """The project's definitions with the default resources on `data_dir`."""
    from food_assets.definitions import build_definitions, default_resources

    return build_definitions(default_resources(str(data_dir)))


def require_asset(defs: dg.Definitions, target: str) -> dg.AssetKey:
    """The key of `target`, which must be an asset of `defs`."""
    key = dg.AssetKey(target)
    if not defs.resolve_asset_graph().has(key):
        raise LaunchError(
            f"asset {target} is not defined in this build (is its module present in "
            "food_assets/defs/assets/?)"
        )
    return key


def open_instance(data_dir: Path) -> dg.DagsterInstance:
    """The persistent Dagster instance, so that the run shows in `dagster dev` like any other.

    DAGSTER_HOME when set (the Makefile/README set it to the repo root, which holds
    dagster.yaml). Unset: the current folder if it holds a dagster.yaml (the repo root), else
    `<data_dir>/dagster_home`, created with a dagster.yaml that turns telemetry off.
    """
    home = os.environ.get("DAGSTER_HOME")
    if home:
        path = Path(home).expanduser().resolve()
    elif (Path.cwd() / "dagster.yaml").is_file():
        path = Path.cwd().resolve()
    else:
        path = data_dir / "dagster_home"
        if not (path / "dagster.yaml").is_file():
            path.mkdir(parents=True, exist_ok=True)
            (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    path.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.from_config(str(path))


def is_reusable(instance: dg.DagsterInstance, key: dg.AssetKey, data_dir: Path) -> bool:
    """Whether an upstream asset can be loaded instead of re-materialized.

    It must have a materialization on this instance, and its value must be stored under the
    artifact root this data folder uses (the IO manager's `value.json` record, ADR 0009): a
    value materialized for another --data-dir or artifact root is not there.
    """
    from food_assets.defs.io_manager import asset_name
    from food_assets.storage import ArtifactStorage

    if instance.get_latest_materialization_event(key) is None:
        return False
    return ArtifactStorage.from_env(data_dir=data_dir).record_exists(asset_name(key))


def plan_run(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    run_config: dict[str, Any],
    *,
    data_dir: Path,
    rebuild_parents: bool = False,
    config_file: Path | None = None,
) -> RunPlan:
    """Select `key` and the parents that must run again; trim `run_config` to them.

    A parent runs again when it is not reusable (`is_reusable`), or always with
    `rebuild_parents`; a parent that is re-made invalidates everything between it and the
    target. `config_file` only names the file in error messages.
    """
    graph = defs.resolve_asset_graph()
    ancestors = dg.AssetSelection.assets(key).upstream().resolve(graph) - {key}
    if rebuild_parents:
        stale = set(ancestors)
    else:
        missing = {k for k in ancestors if not is_reusable(instance, k, data_dir)}
        stale = set()
        for m in missing:
            stale |= dg.AssetSelection.assets(m).downstream().resolve(graph) & ancestors
    selected = stale | {key}
    names = {k.to_user_string() for k in selected}

    # Dagster rejects config for ops that are not in the run: drop it (one file can then serve
    # train and evaluate), and list it for a reused parent. A name that is no asset at all is
    # a typo.
    ops = run_config.get("ops") or {}
    known = {k.to_user_string() for k in graph.get_all_asset_keys()}
    unknown = sorted(set(ops) - known)
    if unknown:
        raise LaunchError(
            f"{config_file}: no asset named {', '.join(unknown)} (`food-assets models` "
            "lists the models; assets are model_<name>, evaluation_<name>, onnx_<name>, ...)"
        )
    parents = {k.to_user_string() for k in ancestors}
    ignored = [name for name in sorted(set(ops) - names) if name in parents]
    if ops:
        run_config["ops"] = {k: v for k, v in ops.items() if k in names}
        if not run_config["ops"]:
            del run_config["ops"]
    return RunPlan(
        target=key,
        selected=frozenset(selected),
        reused=sorted(k.to_user_string() for k in ancestors - selected),
        ignored_config=ignored,
        run_config=run_config,
    )


def validate_op_config(defs: dg.Definitions, ops: Mapping[str, Any]) -> None:
    """Check each op's config against its `dg.Config` class before anything runs.

    Dagster checks only the types up front; pydantic's constraints (`lr > 0`) would otherwise
    fail the step after its parents have already run.
    """
    import pydantic

    for name, op_cfg in ops.items():
        config = (op_cfg or {}).get("config") if isinstance(op_cfg, dict) else None
        if not isinstance(config, dict):
            continue  # Dagster reports malformed entries itself
        try:
            fn = defs.resolve_assets_def(name).op.compute_fn.decorated_fn  # type: ignore[union-attr]
            cls = inspect.signature(fn).parameters["config"].annotation
        except (AttributeError, KeyError, ValueError, TypeError):
            continue  # not a pythonic-config asset: Dagster validates it
        if not (isinstance(cls, type) and issubclass(cls, dg.Config)):
            continue
        try:
            cls(**config)
        except pydantic.ValidationError as exc:
            problems = [
                f"{name}.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
                for e in exc.errors()
            ]
            raise ConfigError("invalid run config:\n  " + "\n  ".join(problems)) from None


def execute(
    defs: dg.Definitions,
    plan: RunPlan,
    instance: dg.DagsterInstance,
    *,
    tags: Mapping[str, str] | None = None,
    loggers: Mapping[str, dg.LoggerDefinition] | None = None,
    logger: str = "console",
    tracking_uri: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> dg.ExecuteInProcessResult:
    """Run the plan in this process on `instance` as the job `CLI_JOB`; never raises for a
    failed step (see `result.success` and `failure_reasons`).

    Args:
        defs: the definitions the plan was made from (assets, checks, resources).
        plan: what to materialize, with its run config.
        instance: where the run and its materializations are recorded.
        tags: run tags (shown in the UI).
        loggers: extra Dagster loggers by name, next to Dagster's own `console`.
        logger: the logger to use unless the run config names its own.
        tracking_uri: the MLflow store the run logs to; runs of dead processes that left MLflow
            runs RUNNING there are ended before this one starts (`food_assets.defs.recovery`).
        echo: prints the recovery's and the run guard's lines (default: stderr).
    """
    # The job API rather than `dg.materialize`: it lets the run have a name of its own in the UI
    # and a chosen logger. Parents outside the selection are loaded by the project's IO manager
    # from their records under the artifact root (ADR 0009), as any partial materialization is.
    run_defs = dg.Definitions(
        assets=[*defs.assets, *defs.asset_checks],  # type: ignore[list-item]
        resources=defs.resources,
        jobs=[dg.define_asset_job(CLI_JOB, selection=dg.AssetSelection.assets(*plan.selected))],
    )
    # Dagster uses a job's loggers only when the run config names them.
    job = run_defs.resolve_job_def(CLI_JOB).with_logger_defs(
        {"console": dg.colored_console_logger, **(loggers or {})}
    )
    run_config = {**plan.run_config}
    run_config.setdefault("loggers", {logger: {}})
    # Runs killed earlier (SIGKILL, OOM) would hold their pool slots for ever: reap them first,
    # and tag this run with its process so that a later launch can tell if it dies (ADR 0025).
    from food_assets.defs import recovery, run_guard

    say = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    recovery.reap_stale_runs(
        instance, tracking_uri=tracking_uri, who=f"a {CLI_JOB} launch", log=say
    )
    run_id = str(uuid.uuid4())  # chosen here so that the guard can watch the run from its start
    guard = run_guard.RunGuard(instance, run_id, tracking_uri=tracking_uri, echo=say)
    status = "FAILED"
    guard.start()
    try:
        result = job.execute_in_process(
            run_config=run_config,
            instance=instance,
            raise_on_error=False,
            tags={**dict(tags or {}), **recovery.owner_tags()},
            run_id=run_id,
        )
        status = "FINISHED" if result.success else "FAILED"
        if was_cancelled(instance, run_id):
            status = "KILLED"
    finally:
        guard.stop()
        end_mlflow_runs(status)
    return result


def was_cancelled(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the run ended CANCELED (Ctrl-C or SIGTERM while no step ran, `run_guard`)."""
    run = instance.get_run_by_id(run_id)
    return run is not None and run.status == dg.DagsterRunStatus.CANCELED


def end_mlflow_runs(status: str) -> None:
    """End the MLflow parent run dagster-mlflow leaves active in this process (its
    `end_mlflow_on_run_finished` hook is not attached to these jobs); a second run in the
    same process (a notebook, a test) would otherwise fail with "run is already active"."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        while mlflow.active_run() is not None:
            mlflow.end_run(status=status)


def failure_reasons(result: dg.ExecuteInProcessResult) -> list[str]:
    """Why a run failed: each failed step's `Failure` description (or error message), else
    run-level errors (a resource that would not start)."""
    lines: list[str] = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                reason = data.user_failure_data.description
            else:
                reason = data.error.message.strip() if data.error else "unknown error"
            lines.append(f"{event.step_key} failed: {reason}")
    if not lines:
        for event in result.all_events:
            error = getattr(event.event_specific_data, "error", None)
            if error is not None:
                line = f"{event.message or event.event_type_value}: {error.message.strip()}"
                if line not in lines:
                    lines.append(line)
    return lines or ["the run failed (see its logs)"]
