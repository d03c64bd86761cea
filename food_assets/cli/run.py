"""`food-assets train / evaluate / export`: materialize one asset (and its missing parents).

The Dagster side (which parents run again, the run config, the in-process run) is
`food_assets.launcher`; this module turns options into its arguments, prints one line per step
while the run goes (`food_assets.cli.progress`), and a summary of what was materialized and
where it lives after it.
`launcher` and Dagster are imported inside the commands, so `food-assets --help` stays fast.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from food_assets.cli.common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    UserError,
    check_model_name,
    data_dir,
    err,
    stdout_console,
    user_errors,
)

Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Print every Dagster event, not only steps.")
]
ModelArg = Annotated[
    str, typer.Argument(help="Registry name (see `food-assets models`).", metavar="MODEL")
]


class TrainMode(StrEnum):
    scratch = "scratch"
    feature_extract = "feature_extract"
    finetune = "finetune"


ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="A Dagster run-config YAML ({ops: {model_x: {config: {...}}}}); options win.",
        exists=False,  # checked by hand for a clearer message
    ),
]
RebuildParents = Annotated[
    bool,
    typer.Option(
        "--rebuild-parents",
        help="Re-materialize every upstream asset too, not only those never materialized.",
    ),
]


@user_errors
def train(
    ctx: typer.Context,
    model: ModelArg,
    epochs: Annotated[int | None, typer.Option(min=1, help="Training epochs.")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Peak learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    mode: Annotated[
        TrainMode | None, typer.Option(help="Default: scratch for custom_cnn, else finetune.")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", min=16, help="Training input size in pixels.")
    ] = None,
    config: ConfigFile = None,
    rebuild_parents: RebuildParents = False,
    verbose: Verbose = False,
) -> None:
    """Materialize model_MODEL (with its missing parents) and print where the bundle is."""
    spec = check_model_name(model)
    overrides = {
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "mode": mode.value if mode else None,
        "image_size": image_size,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    # A flag applies when the model's settings class has that field (ClipConfig: batch_size).
    from dataclasses import fields

    from food_assets.ml.training.config import settings_class

    settings = settings_class(spec)
    extra = sorted(set(overrides) - {f.name for f in fields(settings)})
    if extra:
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise UserError(
            f"{flags} {'does' if len(extra) == 1 else 'do'} not apply to {model} "
            f"({spec.family}: nothing is trained); set its {settings.__name__} fields with --config"
        )
    _materialize(
        ctx, f"model_{model}", config, overrides, rebuild_parents, command="train", verbose=verbose
    )


@user_errors
def evaluate(
    ctx: typer.Context,
    model: ModelArg,
    config: ConfigFile = None,
    rebuild_parents: RebuildParents = False,
    verbose: Verbose = False,
) -> None:
    """Materialize evaluation_MODEL, reusing the trained model if it is materialized."""
    check_model_name(model)
    _materialize(
        ctx, f"evaluation_{model}", config, {}, rebuild_parents, command="evaluate", verbose=verbose
    )


@user_errors
def export(
    ctx: typer.Context,
    model: ModelArg,
    config: ConfigFile = None,
    rebuild_parents: RebuildParents = False,
    verbose: Verbose = False,
) -> None:
    """Materialize onnx_MODEL (ONNX export + parity check), reusing the trained model."""
    spec = check_model_name(model)
    if not spec.onnx:
        raise UserError(f"{model} does not export to ONNX (onnx=False in its registry entry)")
    _materialize(
        ctx, f"onnx_{model}", config, {}, rebuild_parents, command="export", verbose=verbose
    )


def _materialize(
    ctx: typer.Context,
    target: str,
    config_file: Path | None,
    overrides: dict[str, Any],
    rebuild_parents: bool,
    *,
    command: str,
    verbose: bool = False,
) -> None:
    """Run `target` and its missing parents in one Dagster run, then report where things are."""
    import warnings

    with warnings.catch_warnings():
        # dagster-mlflow's beta notices are not for CLI users (pyproject ignores them in tests).
        warnings.filterwarnings("ignore", message=".*is currently in beta.*")
        warnings.filterwarnings("ignore", message=".*is currently in preview.*")
        _materialize_quietly(
            ctx, target, config_file, overrides, rebuild_parents, command=command, verbose=verbose
        )


def _materialize_quietly(
    ctx: typer.Context,
    target: str,
    config_file: Path | None,
    overrides: dict[str, Any],
    rebuild_parents: bool,
    *,
    command: str,
    verbose: bool,
) -> None:
    from food_assets import launcher
    from food_assets.cli.progress import step_logger
    from food_assets.tracking.model_registry import mlflow_tracking_uri

    root = data_dir(ctx)
    run_config = launcher.build_run_config(config_file, target, overrides)
    defs = launcher.load_definitions(root)
    key = launcher.require_asset(defs, target)
    with launcher.open_instance(root) as instance:
        plan = launcher.plan_run(
            defs,
            instance,
            key,
            run_config,
            data_dir=root,
            rebuild_parents=rebuild_parents,
            config_file=config_file,
        )
        for op_name in plan.ignored_config:
            err.print(
                f"note: {op_name} is reused, so its config in {config_file} is ignored "
                "(--rebuild-parents re-materializes it)",
                soft_wrap=True,
                markup=False,
            )
        launcher.validate_op_config(defs, plan.run_config.get("ops") or {})
        err.print(
            f"materializing {', '.join(plan.names)}"
            + (f" (reusing {', '.join(plan.reused)})" if plan.reused else "")
            + f" on the Dagster instance at {instance.root_directory}",
            soft_wrap=True,
            markup=False,
        )
        # --verbose picks Dagster's own console logger (every event, stack traces), else the
        # short one.
        result = launcher.execute(
            defs,
            plan,
            instance,
            tags={"food_assets/cli": command, "food_assets/target": target},
            loggers={"food_assets_cli": step_logger(sys.stderr)},
            logger="console" if verbose else "food_assets_cli",
            tracking_uri=mlflow_tracking_uri(str(root)),
        )
        _report(result, root, target, mlflow_tracking_uri(str(root)))


def _report(result: Any, data_dir: Path, target: str, mlflow_uri: str) -> None:
    """Print what was materialized and where it lives; a failed run prints why and exits 1."""
    from food_assets.launcher import failure_reasons

    run_id = result.run_id
    if not result.success and _cancelled(result):
        typer.echo(f"run {run_id} cancelled; its pool slots are free", err=True)
        raise typer.Exit(EXIT_CANCELLED)
    if not result.success:
        from food_assets.tracking.redact import redact_text

        for line in failure_reasons(result):
            typer.echo(f"error: {redact_text(line)}", err=True)
        typer.echo(
            f"run {run_id} failed; logs: `dagster dev -w workspace.yaml` -> Runs -> {run_id}",
            err=True,
        )
        raise typer.Exit(EXIT_FAILED)

    table = Table(title=f"run {run_id} succeeded", title_justify="left")
    table.add_column("asset")
    table.add_column("output", overflow="fold")
    table.add_column("notes", overflow="fold")
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        name = mat.asset_key.to_user_string()
        table.add_row(name, _asset_location(data_dir, name), ", ".join(_notes(mat)))
    for check in result.get_asset_check_evaluations():
        table.add_row(
            f"check {check.check_name}",
            "",
            f"{_check_status(check)} on {check.asset_key.to_user_string()}",
        )
    stdout_console().print(table)
    typer.echo(f"run id: {run_id}")
    typer.echo(f"{target}: {_asset_location(data_dir, target)}")
    typer.echo("Dagster UI: `dagster dev -w workspace.yaml` (same DAGSTER_HOME) -> Runs")
    from food_assets.tracking.redact import redact_uri

    typer.echo(f"MLflow: `mlflow ui --backend-store-uri {redact_uri(mlflow_uri)}`")


def _cancelled(result: Any) -> bool:
    """Whether the run was cancelled (Ctrl-C or SIGTERM while it waited: `run_guard`)."""
    return result.dagster_run.status.value == "CANCELED"


def _asset_location(data_dir: Path, asset: str) -> str:
    """Where an asset's folder is: under the artifact root (a URL for a remote one)."""
    from food_assets import layout
    from food_assets.storage import ArtifactStorage

    storage = ArtifactStorage.from_env(data_dir=data_dir)
    return storage.location(layout.asset_dir(storage.local, asset))


def _notes(mat: Any) -> list[str]:
    """The summary's notes for one materialization: why it skipped, its files, key metrics."""
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    notes = []
    if meta.get("skipped"):
        notes.append(f"skipped: {meta.get('reason')}")
    for k, v in mat.metadata.items():  # the files a consumer wants: bundle, model.onnx...
        # `path` is the IO manager's value.json record, `root` the source images: not outputs.
        if type(v).__name__ == "PathMetadataValue" and k not in ("root", "path"):
            notes.append(f"{k}: {v.value}")
    for k in ("acc_top1", "best_val_acc", "mlflow_run_id"):
        if k in meta:
            v = meta[k]
            notes.append(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}")
    return notes


def _check_status(check) -> str:
    """`passed`, `FAILED`, or, for a WARN failure (a check that evaluated nothing, such as a
    skipped model's), `warning: <why>` so that it does not read like a broken gate."""
    import dagster as dg

    if check.passed:
        return "passed"
    if check.severity == dg.AssetCheckSeverity.WARN:
        return f"warning: {check.description or 'failed at WARN severity'}"
    return "FAILED"
