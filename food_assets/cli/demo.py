"""`food-assets demo`: serve the Gradio demo (`food_assets.demo`) until interrupted."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from food_assets.cli.common import UserError, data_dir, user_errors


@user_errors
def demo(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            # Backticks: the help is Markdown (rich_markup_mode), which drops a bare <name>.
            help="Preselected model: a materialized name (default: the best one), a bundle "
            "folder or .onnx file, `champion` (the MLflow registry's), or a registered version: "
            "`models:/food_assets.<name>@<alias>` or `models:/food_assets.<name>/<version>`.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 7860,
    share: Annotated[bool, typer.Option(help="Create a public Gradio share link.")] = False,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", min=0.1, help="Largest accepted upload.")
    ] = 10.0,
) -> None:
    """Launch the Gradio demo on a materialized model (needs the `demo` extra).

    `--model champion` (or a `models:/` URI such as `models:/food_assets.<name>@champion`) serves
    a registered version's bundle from the MLflow registry (FOOD_ASSETS_MLFLOW_URI, else
    `<data dir>/mlflow/mlflow.db`), downloaded once into `<data dir>/cache/mlflow_models/`.
    """
    # The demo reads the catalog from the environment; this process is about to be the server.
    os.environ["FOOD_ASSETS_DATA_DIR"] = str(data_dir(ctx))
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
            raise UserError("this build has no demo (food_assets/demo/ is missing)") from None
        raise
