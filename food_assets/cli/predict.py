"""`food-assets predict`: top-k classes for image files and folders, as a table, JSON or CSV.

Reads what earlier runs wrote under the artifact root (`food_assets.catalog`: the data folder,
or FOOD_ASSETS_ARTIFACT_ROOT, which may be an s3:// URL); never touches Dagster. The table,
JSON or CSV goes to stdout; progress, warnings and the summary to stderr.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from food_assets.cli.common import (
    EXIT_FAILED,
    Backend,
    Precision,
    UserError,
    data_dir,
    err,
    stdout_console,
    user_errors,
)

if TYPE_CHECKING:  # only for type hints; importing them for real would load torch
    from food_assets.ml.inference.predictor import PredictionResult, Predictor
    from food_assets.resolver import Resolved


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@user_errors
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
        typer.Option(
            "--model",
            "-m",
            help="A materialized model by name (see `models`), `champion` (the MLflow "
            "registry's), or a registered version: `models:/food_assets.<name>@<alias>` or "
            "`models:/food_assets.<name>/<version>`.",
        ),
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
    precision: Annotated[
        Precision,
        typer.Option(
            "--precision",
            help="Which precision answers: auto (the fastest variant that passed its accuracy "
            "gate, as measured at export), fp32, bf16 (OpenVINO) or int8 (an error if it is "
            "absent or failed its gate).",
        ),
    ] = Precision.auto,
    backend: Annotated[
        Backend,
        typer.Option(
            "--backend",
            help="Which runtime answers: auto (the fastest that passed its gates), onnxruntime "
            "(portable) or openvino.",
        ),
    ] = Backend.auto,
) -> None:
    """Top-k food classes with probabilities for image files and folders.

    Uses the model's ONNX export when there is one (fp32 or int8, see --precision), else its
    bundle. Without --model or --from, the MLflow registry's champion (the best model that passed
    its accuracy floor); with no champion yet, the most accurate materialized model, said on
    stderr. `--model champion` (or a `models:/`
    URI) loads a registered version's bundle from the MLflow registry (FOOD_ASSETS_MLFLOW_URI,
    else `<data dir>/mlflow/mlflow.db`). Unreadable files are reported one by
    one (stderr, or the `error` field in JSON/CSV) and never stop the run.
    """
    if model and from_path:
        raise UserError("pass either --model or --from, not both")
    # List the files before loading the model: a missing path is reported at once.
    files = _list_image_files(paths)
    predictor = _load_predictor(
        _resolve_model(ctx, model, from_path), precision.value, backend.value
    )
    results = predictor.predict_paths(files, top_k=top_k, batch_size=batch_size)
    n_ok, n_bad = _write_results(_with_progress(results, len(files)), fmt)
    summary = f"predicted {n_ok} of {len(files)} file(s)"
    if n_bad:
        summary += f"; {n_bad} could not be read"
    err.print(summary, markup=False)
    if n_ok == 0:
        raise typer.Exit(EXIT_FAILED)


def _list_image_files(paths: list[Path]) -> list[Path]:
    """The image files under `paths`; a UserError when there is none to predict."""
    from food_assets.ml.inference.predictor import iter_image_files

    files = list(iter_image_files(paths))
    if not files:
        raise UserError(
            f"no image files under {', '.join(map(str, paths))} (looked for common image "
            "extensions, hidden files skipped)"
        )
    return files


def _load_predictor(
    resolved: Resolved, precision: str = "auto", backend: str = "auto"
) -> Predictor:
    """Load what `_resolve_model` chose and say on stderr which model (and file) answers, and,
    for the default, why that model (the champion, or the fallback when there is none)."""
    from food_assets import catalog

    choice = resolved.model
    predictor = catalog.load_predictor(choice, precision=precision, backend=backend)
    if choice.registry is not None:
        found = choice.registry
        where = f"{found.uri}: version {found.version}, run {found.run_id}"
    elif choice.storage is not None:
        where = choice.storage.location(getattr(predictor, "path", choice.best_path))
    else:  # a path given with --from
        where = str(getattr(predictor, "path", choice.best_path))
    if choice.onnx_path is None and choice.temperature is not None:
        err.print(f"note: {choice.temperature_note()}", soft_wrap=True, markup=False)
    if resolved.how.startswith(("champion", "fallback")):
        err.print(f"default: {resolved.how}", soft_wrap=True, markup=False)
    err.print(f"model: {predictor.model_name} ({where})", soft_wrap=True, markup=False)
    served = getattr(predictor, "choice", None)
    if served is not None:
        err.print(f"precision: {served.precision} ({served.reason})", soft_wrap=True, markup=False)
        err.print(f"backend: {served.backend}", markup=False)
    return predictor


def _write_results(results: Iterator[PredictionResult], fmt: OutputFormat) -> tuple[int, int]:
    """Write each result in `fmt` on stdout, warn about each bad file on stderr; (ok, bad)."""
    writer = {
        OutputFormat.table: _TableWriter,
        OutputFormat.json: _JsonWriter,
        OutputFormat.csv: _CsvWriter,
    }[fmt]()
    n_ok = n_bad = 0
    for result in results:
        if result.ok:
            n_ok += 1
        else:
            n_bad += 1
            reason = f"{result.error} ({result.detail})" if result.detail else result.error
            err.print(f"warning: {result.path}: {reason}", soft_wrap=True, markup=False)
        writer.add(result)
    writer.close()
    return n_ok, n_bad


def _resolve_model(ctx: typer.Context, model: str | None, from_path: Path | None) -> Resolved:
    """What to load, by the one resolver (`food_assets.resolver`): --from as given (a path),
    --model (`champion`, `models:/...`, a materialized name), else the default (the champion;
    else the most accurate model, said on stderr) that the demo preselects too."""
    from food_assets.resolver import resolve_model

    if from_path is not None:
        if not from_path.exists():
            raise UserError(
                f"{from_path} does not exist: pass an .onnx file or a model bundle folder"
            )
        return resolve_model(from_path)
    return resolve_model(model, data_dir(ctx))


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
            stdout_console().print(self.table)


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
