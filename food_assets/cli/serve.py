"""`food-assets serve`: the HTTP model server (`food_assets.server`) until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from food_assets.cli.common import (
    EXIT_FAILED,
    Backend,
    Precision,
    UserError,
    data_dir,
    err,
    user_errors,
)


@user_errors
def serve(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="A materialized name (default: the best one), `champion` (followed: a new "
            "version is swapped in when the alias moves), `models:/food_assets.<name>@<alias>`, "
            "`models:/food_assets.<name>/<version>`, or a bundle folder / .onnx file.",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to listen on; past loopback a token is required.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0: any free port.")] = 8000,
    precision: Annotated[
        Precision,
        typer.Option(help="Which ONNX export answers (the serving rule of `predict`)."),
    ] = Precision.auto,
    backend: Annotated[
        Backend,
        typer.Option(help="Which runtime answers: auto (the fastest that passed its gates)."),
    ] = Backend.auto,
    max_batch: Annotated[int, typer.Option(min=1, max=512, help="Images per model call.")] = 16,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, max=1000, help="How long a request waits for a batch.")
    ] = 5.0,
    max_body_mb: Annotated[float, typer.Option(min=0.01, help="Largest accepted body.")] = 8.0,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Larger images are refused (decompression bombs).")
    ] = 25_000_000,
    max_k: Annotated[int, typer.Option(min=1, help="Largest k a request may ask for.")] = 20,
    poll_s: Annotated[
        float, typer.Option(min=0, help="Seconds between alias look-ups (champion); 0: never.")
    ] = 30.0,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the bearer token (else FOOD_ASSETS_SERVE_TOKEN)."),
    ] = None,
    unsafe_no_auth: Annotated[
        bool,
        typer.Option(
            "--unsafe-no-auth", help="UNSAFE: serve on a non-loopback host without a token."
        ),
    ] = False,
    graceful_s: Annotated[
        float, typer.Option(min=0, help="Seconds a shutdown waits for requests in flight.")
    ] = 30.0,
) -> None:
    """Serve a model over HTTP: `POST /predict` (raw image body or multipart field `image`,
    `?k=`), `GET /health`, `GET /ready`, `GET /metrics`, `GET /docs`. Requests arriving together
    are batched (--max-batch, --max-wait-ms). See docs/serving.md.
    """
    from food_assets.server import server
    from food_assets.server.app import ServerSettings

    token = server.read_token(token_file)
    server.check_bind(host, token, unsafe_no_auth)
    if unsafe_no_auth and not server.is_loopback(host) and not token:
        err.print(f"warning: serving on {host} WITHOUT authentication", markup=False)
    settings = ServerSettings(
        data=data_dir(ctx),
        ref=model,
        precision=precision.value,
        backend=backend.value,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_body_bytes=int(max_body_mb * 2**20),
        max_pixels=max_pixels,
        max_k=max_k,
        token=token,
        poll_s=poll_s,
    )
    # Resolve before listening: a reference that names nothing is one line and exit code 2.
    from food_assets.server.models import resolve_reference

    resolve_reference(model, settings.data)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    fatal = server.serve(
        settings,
        host=host,
        port=port,
        graceful_s=graceful_s,
        announce=lambda line: typer.echo(line),
    )
    if fatal:
        err.print(f"error: the model did not load: {fatal}", markup=False)
        raise typer.Exit(EXIT_FAILED)


__all__ = ["UserError", "serve"]
