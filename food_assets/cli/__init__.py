"""`food-assets`: predict with a materialized model, train/evaluate/export through Dagster, list
models, launch the demo, serve a model over HTTP.

One module per command group: `launch` (`run`: the whole graph, what `make run` calls),
`predict`, `models`, `run` (`train`, `evaluate`, `export`, which launch Dagster through
`food_assets.launcher`) and `demo`; `common` holds what they share (the
consoles, exit codes, the user-error decorator). This module makes the Typer `app` and adds the
commands to it; the command modules do not import it, so there is no import cycle.

Kept import-light on purpose: torch, Dagster and timm are imported inside the commands that
need them, so `food-assets --help` answers at once. Every user mistake (a `FoodAssetsError`, a
Dagster config error, a missing path) ends as one `error: ...` line and exit code 2, never a
traceback. Exit codes: 0 success; 1 the work itself failed (a failed Dagster run, no file could
be predicted); 2 a user error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from food_assets.cli import demo, launch, models, predict, run, serve
from food_assets.cli.common import EXIT_FAILED, EXIT_USER_ERROR, UserError

__all__ = ["EXIT_FAILED", "EXIT_USER_ERROR", "UserError", "app", "main"]

app = typer.Typer(
    name="food-assets",
    help="Train, evaluate, export and use Food-101 classifiers (a Dagster asset graph).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a user mistake is one line; a bug keeps its plain traceback
    rich_markup_mode="markdown",
)


@app.callback()
def _main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="FOOD_ASSETS_DATA_DIR",
            help="Where runs write (default ./data): sources, caches and, unless "
            "FOOD_ASSETS_ARTIFACT_ROOT names another root (a folder or s3://bucket/prefix), "
            "the artifacts.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train, evaluate, export and use Food-101 classifiers (a Dagster asset graph)."""
    from food_assets import catalog

    ctx.obj = {"data_dir": catalog.data_dir(data_dir)}


# In this order in `food-assets --help`.
for _command in (
    launch.run,
    predict.predict,
    models.models,
    run.train,
    run.evaluate,
    run.export,
    demo.demo,
    serve.serve,
):
    app.command()(_command)


def main() -> None:
    """Console-script entry point (`food-assets`)."""
    app()
