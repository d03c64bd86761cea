"""`food-assets`: predict with a materialized model, train/evaluate/export through Dagster, list
models, launch the demo.

Kept import-light on purpose: torch, Dagster and timm are imported inside the commands that
need them, so `food-assets --help` answers at once. Every user mistake (a `FoodAssetsError`, a
Dagster config error, a missing path) ends as one `error: ...` line and exit code 2, never a
traceback. Exit codes: 0 success; 1 the work itself failed (a failed Dagster run, no file could
be predicted); 2 a user error.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # only for type hints; importing them for real would load torch and Dagster
    import dagster as dg

    from food_assets.catalog import MaterializedModel
    from food_assets.ml.inference.predictor import PredictionResult

EXIT_FAILED = 1
EXIT_USER_ERROR = 2

app = typer.Typer(
    name="food-assets",
    help="Train, evaluate, export and use Food-101 classifiers (a Dagster asset graph).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a user mistake is one line; a bug keeps its plain traceback
    rich_markup_mode="markdown",
)

# Progress bars, warnings and errors go to stderr so that JSON/CSV on stdout stays parseable.
# `Console(stderr=True)` looks up sys.stderr at each write, so test runners that swap the streams
# see the output too.
err = Console(stderr=True, highlight=False)


def _stdout_console() -> Console:
    """Tables on stdout; wide when piped, so that a log or `grep` gets whole rows."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=160)
    return console


class UserError(Exception):
    """A mistake on the command line itself (bad option combination, missing path)."""


def _fail(message: str, code: int = EXIT_USER_ERROR) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user mistakes into `error: <message>` and exit code 2 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from food_assets.ml.errors import FoodAssetsError

        try:
            return func(*args, **kwargs)
        except (FoodAssetsError, UserError) as exc:
            raise _fail(str(exc)) from None
        except Exception as exc:
            # Dagster's config and selection errors are user mistakes too; only checked when
            # Dagster is loaded, so commands that never touch it do not import it here.
            if _is_dagster_user_error(exc):
                raise _fail(_dagster_error_message(exc)) from None
            raise

    return wrapper


def _is_dagster_user_error(exc: BaseException) -> bool:
    if "dagster" not in sys.modules:
        return False
    import dagster as dg

    return isinstance(
        exc,
        dg.DagsterInvalidConfigError | dg.DagsterInvalidSubsetError,
    )


def _dagster_error_message(exc: BaseException) -> str:
    import dagster as dg

    if isinstance(exc, dg.DagsterInvalidConfigError):
        lines = [str(e.message) for e in exc.errors] or [str(exc)]
        return "invalid run config:\n  " + "\n  ".join(lines)
    return str(exc)


# --------------------------------------------------------------------------------------------
# Global options


@app.callback()
def _main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="FOOD_ASSETS_DATA_DIR",
            help="Where runs write their artifacts (default ./data).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train, evaluate, export and use Food-101 classifiers (a Dagster asset graph)."""
    from food_assets import catalog

    ctx.obj = {"data_dir": catalog.data_dir(data_dir)}


def _data_dir(ctx: typer.Context) -> Path:
    from food_assets import catalog

    obj = ctx.find_root().obj or {}
    return obj.get("data_dir") or catalog.data_dir()


# --------------------------------------------------------------------------------------------
# predict


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@app.command()
@_user_errors
def predict(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Image files or folders (searched recursively; hidden files skipped).",
            show_default=False,
            metavar="PATH...",
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="A materialized model by name (see `models`)."),
    ] = None,
    from_path: Annotated[
        Path | None,
        typer.Option(
            "--from", help="An .onnx file, a bundle folder (card.json) or an onnx_<name> folder."
        ),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes per image.")] = 5,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = (
        OutputFormat.table
    ),
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 32,
) -> None:
    """Top-k food classes with probabilities for image files and folders.

    Uses the model's ONNX export when there is one, else its bundle. Without --model or --from,
    the materialized model with the best test accuracy. Unreadable files are reported one by
    one (stderr, or the `error` field in JSON/CSV) and never stop the run.
    """
    from food_assets.ml.inference.predictor import iter_image_files

    if model and from_path:
        raise UserError("pass either --model or --from, not both")
    # List the files before loading the model: a missing path is reported at once.
    files = list(iter_image_files(paths))
    if not files:
        raise UserError(
            f"no image files under {', '.join(map(str, paths))} (looked for common image "
            "extensions, hidden files skipped)"
        )
    artifact = _resolve_model_path(ctx, model, from_path)

    from food_assets.ml.inference.predictor import load_predictor

    predictor = load_predictor(artifact)
    err.print(f"model: {predictor.model_name} ({artifact})", soft_wrap=True, markup=False)

    writer = {
        OutputFormat.table: _TableWriter,
        OutputFormat.json: _JsonWriter,
        OutputFormat.csv: _CsvWriter,
    }[fmt]()
    n_ok = n_bad = 0
    for result in _with_progress(
        predictor.predict_paths(files, top_k=top_k, batch_size=batch_size), len(files)
    ):
        if result.ok:
            n_ok += 1
        else:
            n_bad += 1
            reason = f"{result.error} ({result.detail})" if result.detail else result.error
            err.print(f"warning: {result.path}: {reason}", soft_wrap=True, markup=False)
        writer.add(result)
    writer.close()

    summary = f"predicted {n_ok} of {len(files)} file(s)"
    if n_bad:
        summary += f"; {n_bad} could not be read"
    err.print(summary, markup=False)
    if n_ok == 0:
        raise typer.Exit(EXIT_FAILED)


def _resolve_model_path(ctx: typer.Context, model: str | None, from_path: Path | None) -> Path:
    """What to load: --from as given, --model from the catalog, else the best materialized."""
    from food_assets import catalog

    if from_path is not None:
        if not from_path.exists():
            raise UserError(
                f"{from_path} does not exist: pass an .onnx file or a model bundle folder"
            )
        return from_path
    root = _data_dir(ctx)
    found = catalog.list_materialized(root)
    if model is not None:
        for m in found:
            if m.name == model and m.best_path is not None:
                return m.best_path
        _check_model_name(model)  # an unknown name gets the list of known ones
        raise UserError(
            f"no materialized model {model!r} under {root}; run `food-assets train {model}` "
            f"or `food-assets export {model}` first (or pass --data-dir / --from PATH)"
        )
    if not found:
        raise UserError(
            f"no materialized model under {root}; run `food-assets train custom_cnn` (or "
            "`food-assets export <model>`) first, or pass --from PATH"
        )
    best = max(found, key=_ranking)
    assert best.best_path is not None  # list_materialized only lists models with a file
    return best.best_path


def _ranking(m: MaterializedModel) -> tuple[float, bool]:
    """Best test top-1 accuracy first; an ONNX export wins a tie (faster to run)."""
    acc = m.metrics.get("test/acc_top1")
    return (float(acc) if isinstance(acc, int | float) else -1.0, m.onnx_path is not None)


def _with_progress(results: Iterator[PredictionResult], total: int) -> Iterator[PredictionResult]:
    """A progress bar on stderr while `results` are consumed (only on a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=total < 2 or not err.is_terminal,
    )
    with progress:
        task = progress.add_task("predicting", total=total)
        for result in results:
            progress.advance(task)
            yield result


class _TableWriter:
    """A rich table on stdout: one section per file, one row per class."""

    def __init__(self) -> None:
        self.table = Table(show_lines=False)
        self.table.add_column("file", overflow="fold")
        self.table.add_column("#", justify="right")
        self.table.add_column("class")
        self.table.add_column("probability", justify="right")

    def add(self, r: PredictionResult) -> None:
        if not r.ok:
            self.table.add_row(r.path, "", f"[red]error: {r.error}[/red]", "", end_section=True)
            return
        for i, (label, p) in enumerate(r.top_k, start=1):
            last = i == len(r.top_k)
            self.table.add_row(
                r.path if i == 1 else "", str(i), label, f"{p:.4f}", end_section=last
            )

    def close(self) -> None:
        if self.table.row_count:
            _stdout_console().print(self.table)


class _JsonWriter:
    """One JSON array on stdout, streamed item by item so long listings start at once."""

    def __init__(self) -> None:
        self.n = 0

    def add(self, r: PredictionResult) -> None:
        item = {
            "path": r.path,
            "label": r.label,
            "probability": r.top_k[0][1] if r.top_k else None,
            "top_k": [{"label": c, "probability": p} for c, p in r.top_k],
            "error": r.error,
        }
        sys.stdout.write(("[\n  " if self.n == 0 else ",\n  ") + json.dumps(item))
        sys.stdout.flush()
        self.n += 1

    def close(self) -> None:
        sys.stdout.write("[]\n" if self.n == 0 else "\n]\n")


class _CsvWriter:
    """Long CSV on stdout: one row per (file, rank); a failed file is one row with `error`."""

    def __init__(self) -> None:
        self.writer = csv.writer(sys.stdout, lineterminator="\n")
        self.writer.writerow(["path", "rank", "label", "probability", "error"])

    def add(self, r: PredictionResult) -> None:
        if not r.ok:
            self.writer.writerow([r.path, "", "", "", r.error])
            return
        for i, (label, p) in enumerate(r.top_k, start=1):
            self.writer.writerow([r.path, i, label, f"{p:.6f}", ""])

    def close(self) -> None:
        sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# models


@app.command()
@_user_errors
def models(ctx: typer.Context) -> None:
    """List the registry's models and what has been materialized (bundle, ONNX, accuracy)."""
    from food_assets import catalog
    from food_assets.ml.models.registry import get_model_spec, list_models

    root = _data_dir(ctx)
    found = {m.name: m for m in catalog.list_materialized(root)}
    table = Table(title=f"models (artifacts under {root})", title_justify="left")
    for col in ("model", "family", "default weights", "exportable", "bundle", "ONNX", "test acc"):
        table.add_column(col, justify="right" if col == "test acc" else "left")
    for name in list_models():
        spec = get_model_spec(name)
        m = found.get(name)
        acc = m.metrics.get("test/acc_top1") if m else None
        table.add_row(
            name,
            spec.family,
            spec.default_weights,
            "yes" if spec.onnx else "no",
            "yes" if m and m.bundle_dir else "-",
            "yes" if m and m.onnx_path else "-",
            f"{acc:.3f}" if isinstance(acc, int | float) else "-",
        )
    _stdout_console().print(table)
    typer.echo(
        "Train one with `food-assets train NAME`; predict with `food-assets predict -m NAME`."
    )


# --------------------------------------------------------------------------------------------
# train / evaluate / export: materialize one asset (and its missing parents) through Dagster


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


@app.command()
@_user_errors
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
    spec = _check_model_name(model)
    overrides = {
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "mode": mode.value if mode else None,
        "image_size": image_size,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if spec.family not in ("scratch", "transfer"):
        # CLIP models have their own config (ClipAssetConfig): only the batch size is shared.
        extra = sorted(set(overrides) - {"batch_size"})
        if extra:
            flags = ", ".join("--" + k.replace("_", "-") for k in extra)
            raise UserError(
                f"{flags} {'does' if len(extra) == 1 else 'do'} not apply to {model} "
                f"({spec.family}: nothing is trained); set its ClipAssetConfig fields with --config"
            )
    _materialize(
        ctx, f"model_{model}", config, overrides, rebuild_parents, command="train", verbose=verbose
    )


@app.command()
@_user_errors
def evaluate(
    ctx: typer.Context,
    model: ModelArg,
    config: ConfigFile = None,
    rebuild_parents: RebuildParents = False,
    verbose: Verbose = False,
) -> None:
    """Materialize evaluation_MODEL, reusing the trained model if it is materialized."""
    _check_model_name(model)
    _materialize(
        ctx, f"evaluation_{model}", config, {}, rebuild_parents, command="evaluate", verbose=verbose
    )


@app.command()
@_user_errors
def export(
    ctx: typer.Context,
    model: ModelArg,
    config: ConfigFile = None,
    rebuild_parents: RebuildParents = False,
    verbose: Verbose = False,
) -> None:
    """Materialize onnx_MODEL (ONNX export + parity check), reusing the trained model."""
    spec = _check_model_name(model)
    if not spec.onnx:
        raise UserError(f"{model} does not export to ONNX (onnx=False in its registry entry)")
    _materialize(
        ctx, f"onnx_{model}", config, {}, rebuild_parents, command="export", verbose=verbose
    )


def _check_model_name(name: str) -> Any:
    """The registry entry, or an UnknownModelError that points at `food-assets models`."""
    from food_assets.ml.errors import UnknownModelError
    from food_assets.ml.models.registry import get_model_spec

    try:
        return get_model_spec(name)
    except UnknownModelError as exc:
        raise UnknownModelError(f"{exc} (`food-assets models` lists them)") from None


def _load_run_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    from food_assets.ml.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path} as YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping ({{ops: {{<asset>: {{config: ...}}}}}})")
    return data


def _instance(data_dir: Path) -> dg.DagsterInstance:
    """The persistent Dagster instance, so that the run shows in `dagster dev` like any other.

    DAGSTER_HOME when set (the Makefile/README set it to the repo root, which holds
    dagster.yaml). Unset: the current folder if it holds a dagster.yaml (the repo root), else
    `<data_dir>/dagster_home`, created with a dagster.yaml that turns telemetry off.
    """
    import dagster as dg

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


def _is_reusable(instance: dg.DagsterInstance, key: dg.AssetKey, data_dir: Path) -> bool:
    """Whether an upstream asset can be loaded instead of re-materialized.

    It must have a materialization on this instance, its stored value (the default
    filesystem IO manager's pickle under the instance's storage folder) must still be there,
    and its artifact folder must exist under this data dir: a value from another --data-dir
    would point at files elsewhere.
    """
    if instance.get_latest_materialization_event(key) is None:
        return False
    stored = Path(instance.storage_directory(), *key.path)
    return stored.is_file() and (data_dir / "artifacts" / key.to_user_string()).is_dir()


def _validate_op_config(defs: dg.Definitions, ops: dict[str, Any]) -> None:
    """Check each op's config against its `dg.Config` class before anything runs.

    Dagster checks only the types up front; pydantic's constraints (`lr > 0`) would otherwise
    fail the step after its parents have already run.
    """
    import inspect

    import dagster as dg
    import pydantic

    from food_assets.ml.errors import ConfigError

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


def _run_logger() -> Any:
    """A Dagster logger that prints one short line per step event and per asset log on stderr.

    Dagster's console logger prints every engine event and a full stack trace for a `Failure`;
    the CLI prints the failure's description at the end instead (`--verbose` brings it back).
    """
    import logging
    import time

    import dagster as dg

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            meta = getattr(record, "dagster_meta", None) or {}
            event = meta.get("dagster_event")
            where = meta.get("step_key") or (
                f"resource:{meta['resource_name']}" if meta.get("resource_name") else "run"
            )
            message = meta.get("orig_message") or record.getMessage()
            if event is not None:
                kind = event.event_type_value
                if kind == "STEP_START":
                    message = "started"
                elif kind == "STEP_SUCCESS":
                    message = message.split(" in ", 1)[-1].rstrip(".")
                    message = f"done in {message}" if message[:1].isdigit() else "done"
                elif kind == "STEP_FAILURE":
                    message = "failed"
                else:
                    return
            elif record.levelno < logging.INFO:
                return
            elif message.startswith("Dependencies for step"):
                message = "not run (a step it depends on failed)"
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            print(f"{stamp} {where}: {message}", file=sys.stderr, flush=True)

    @dg.logger(description="food-assets CLI: one line per step event on stderr")
    def cli_console(init_context: dg.InitLoggerContext) -> logging.Logger:
        logger = logging.getLogger("food_assets.cli.run")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.handlers = [_Handler()]
        return logger

    return cli_console


#: The job the CLI's runs belong to (the name they show under in the Dagster UI).
CLI_JOB = "food_assets_cli"


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
    import dagster as dg

    from food_assets.definitions import build_definitions
    from food_assets.resources import default_resources, mlflow_tracking_uri

    data_dir = _data_dir(ctx)
    run_config = _load_run_config(config_file)
    if overrides:
        ops = run_config.setdefault("ops", {})
        op = ops.setdefault(target, {})
        op["config"] = {**(op.get("config") or {}), **overrides}

    resources = default_resources(str(data_dir))
    defs = build_definitions(resources)
    graph = defs.resolve_asset_graph()
    key = dg.AssetKey(target)
    if not graph.has(key):
        raise UserError(
            f"asset {target} is not defined in this build (is its module present in "
            "food_assets/assets/?)"
        )

    with _instance(data_dir) as instance:
        ancestors = dg.AssetSelection.assets(key).upstream().resolve(graph) - {key}
        if rebuild_parents:
            stale = set(ancestors)
        else:
            missing = {k for k in ancestors if not _is_reusable(instance, k, data_dir)}
            # A parent that is re-made invalidates everything between it and the target.
            stale = set()
            for m in missing:
                stale |= dg.AssetSelection.assets(m).downstream().resolve(graph) & ancestors
        selected = stale | {key}
        names = {k.to_user_string() for k in selected}
        reused = sorted(k.to_user_string() for k in ancestors - selected)

        # Dagster rejects config for ops that are not in the run: drop it (one file can then
        # serve train and evaluate), and say so for a reused parent. A name that is no asset
        # at all is a typo.
        ops = run_config.get("ops") or {}
        known = {k.to_user_string() for k in graph.get_all_asset_keys()}
        unknown = sorted(set(ops) - known)
        if unknown:
            raise UserError(
                f"{config_file}: no asset named {', '.join(unknown)} (`food-assets models` "
                "lists the models; assets are model_<name>, evaluation_<name>, onnx_<name>, ...)"
            )
        for op_name in sorted(set(ops) - names):
            if op_name in {k.to_user_string() for k in ancestors}:
                err.print(
                    f"note: {op_name} is reused, so its config in {config_file} is ignored "
                    "(--rebuild-parents re-materializes it)",
                    soft_wrap=True,
                    markup=False,
                )
        if ops:
            run_config["ops"] = {k: v for k, v in ops.items() if k in names}
            if not run_config["ops"]:
                del run_config["ops"]
        _validate_op_config(defs, run_config.get("ops") or {})

        err.print(
            f"materializing {', '.join(sorted(names))}"
            + (f" (reusing {', '.join(reused)})" if reused else "")
            + f" on the Dagster instance at {instance.root_directory}",
            soft_wrap=True,
            markup=False,
        )
        # The job API rather than `dg.materialize`: it lets the run have a name of its own in
        # the UI and a quiet logger. Parents outside the selection are loaded by the default
        # IO manager from the instance's storage folder, as any partial materialization does.
        run_defs = dg.Definitions(
            assets=[*defs.assets, *defs.asset_checks],  # type: ignore[list-item]
            resources=resources,
            jobs=[dg.define_asset_job(CLI_JOB, selection=dg.AssetSelection.assets(*selected))],
        )
        # Dagster uses a job's loggers only when the run config names them; --verbose picks
        # Dagster's own console logger (every event, stack traces), else the short one.
        job = run_defs.resolve_job_def(CLI_JOB).with_logger_defs(
            {"console": dg.colored_console_logger, "food_assets_cli": _run_logger()}
        )
        run_config.setdefault("loggers", {"console" if verbose else "food_assets_cli": {}})
        status = "FAILED"
        try:
            result = job.execute_in_process(
                run_config=run_config,
                instance=instance,
                raise_on_error=False,
                tags={"food_assets/cli": command, "food_assets/target": target},
            )
            status = "FINISHED" if result.success else "FAILED"
        finally:
            _end_mlflow_runs(status)
        _report(result, data_dir, target, mlflow_tracking_uri(str(data_dir)))


def _failure_lines(result: Any) -> list[str]:
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


def _end_mlflow_runs(status: str) -> None:
    """End the MLflow parent run dagster-mlflow leaves active in this process (its
    `end_mlflow_on_run_finished` hook is not attached to these jobs); a second command in the
    same process (a notebook, a test) would otherwise fail with "run is already active"."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        while mlflow.active_run() is not None:
            mlflow.end_run(status=status)


def _report(result: Any, data_dir: Path, target: str, mlflow_uri: str) -> None:
    """Print what was materialized and where it lives; a failed run prints why and exits 1."""
    run_id = result.run_id
    if not result.success:
        for line in _failure_lines(result):
            typer.echo(f"error: {line}", err=True)
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
        meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
        notes = []
        if meta.get("skipped"):
            notes.append(f"skipped: {meta.get('reason')}")
        for k, v in mat.metadata.items():  # the files a consumer wants: bundle, model.onnx...
            # `path` is the IO manager's pickle, `root` the source images: not outputs.
            if type(v).__name__ == "PathMetadataValue" and k not in ("root", "path"):
                notes.append(f"{k}: {v.value}")
        for k in ("acc_top1", "best_val_acc", "mlflow_run_id"):
            if k in meta:
                v = meta[k]
                notes.append(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}")
        table.add_row(name, str(data_dir / "artifacts" / name), ", ".join(notes))
    for check in result.get_asset_check_evaluations():
        table.add_row(
            f"check {check.check_name}",
            "",
            f"{_check_status(check)} on {check.asset_key.to_user_string()}",
        )
    _stdout_console().print(table)
    typer.echo(f"run id: {run_id}")
    typer.echo(f"{target}: {data_dir / 'artifacts' / target}")
    typer.echo("Dagster UI: `dagster dev -w workspace.yaml` (same DAGSTER_HOME) -> Runs")
    typer.echo(f"MLflow: `mlflow ui --backend-store-uri {mlflow_uri}`")


def _check_status(check) -> str:
    """`passed`, `FAILED`, or, for a WARN failure (a check that evaluated nothing, such as a
    skipped model's), `warning: <why>` so that it does not read like a broken gate."""
    import dagster as dg

    if check.passed:
        return "passed"
    if check.severity == dg.AssetCheckSeverity.WARN:
        return f"warning: {check.description or 'failed at WARN severity'}"
    return "FAILED"


# --------------------------------------------------------------------------------------------
# demo


@app.command()
@_user_errors
def demo(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name (default: the best one).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 7860,
    share: Annotated[bool, typer.Option(help="Create a public Gradio share link.")] = False,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", min=0.1, help="Largest accepted upload.")
    ] = 10.0,
) -> None:
    """Launch the Gradio demo on a materialized model (needs the `demo` extra)."""
    # The demo reads the catalog from the environment; this process is about to be the server.
    os.environ["FOOD_ASSETS_DATA_DIR"] = str(_data_dir(ctx))
    try:
        from food_assets import demo as demo_module

        demo_module.launch(
            model=model, host=host, port=port, share=share, max_upload_mb=max_upload_mb
        )
    except ModuleNotFoundError as exc:
        # Gradio is imported lazily by the demo, so a missing extra shows up at launch.
        if exc.name and exc.name.split(".")[0] == "gradio":
            raise UserError(
                "the demo needs Gradio: pip install -e '.[demo]' (the `demo` extra)"
            ) from None
        if exc.name == "food_assets.demo":
            raise UserError("this build has no demo (food_assets/demo.py is missing)") from None
        raise


def main() -> None:
    """Console-script entry point (`food-assets`)."""
    app()


if __name__ == "__main__":
    main()
