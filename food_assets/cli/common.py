"""What every `food-assets` command shares: the consoles, exit codes and user-error handling.

Every user mistake (a `FoodAssetsError`, a Dagster config error, a missing path) ends as one
`error: ...` line and exit code 2, never a traceback. Exit codes: 0 success; 1 the work itself
failed (a failed Dagster run, no file could be predicted); 2 a user error.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

EXIT_FAILED = 1
#: Exit status of a cancelled run (128 + SIGINT, as a shell reports Ctrl-C).
EXIT_CANCELLED = 130
EXIT_USER_ERROR = 2

# Progress bars, warnings and errors go to stderr so that JSON/CSV on stdout stays parseable.
# `Console(stderr=True)` looks up sys.stderr at each write, so test runners that swap the streams
# see the output too.
err = Console(stderr=True, highlight=False)


def stdout_console() -> Console:
    """Tables on stdout; wide when piped, so that a log or `grep` gets whole rows."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=160)
    return console


class UserError(Exception):
    """A mistake on the command line itself (bad option combination, missing path)."""


def fail(message: str, code: int = EXIT_USER_ERROR) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user mistakes into `error: <message>` and exit code 2 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from food_assets.ml.errors import FoodAssetsError

        try:
            return func(*args, **kwargs)
        except (FoodAssetsError, UserError) as exc:
            raise fail(str(exc)) from None
        except Exception as exc:
            # Dagster's config and selection errors are user mistakes too; only checked when
            # Dagster is loaded, so commands that never touch it do not import it here.
            if _is_dagster_user_error(exc):
                raise fail(_dagster_error_message(exc)) from None
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


def data_dir(ctx: typer.Context) -> Path:
    """The data folder the root callback resolved (`--data-dir`, `FOOD_ASSETS_DATA_DIR`)."""
    from food_assets import catalog

    obj = ctx.find_root().obj or {}
    return obj.get("data_dir") or catalog.data_dir()


def check_model_name(name: str) -> Any:
    """The registry entry, or an UnknownModelError that points at `food-assets models`."""
    from food_assets.ml.errors import UnknownModelError
    from food_assets.ml.models.registry import get_model_spec

    try:
        return get_model_spec(name)
    except UnknownModelError as exc:
        raise UnknownModelError(f"{exc} (`food-assets models` lists them)") from None


class Precision(StrEnum):
    """Which export answers (`food_assets.ml.inference.serving.PRECISIONS`)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    int8 = "int8"


class Backend(StrEnum):
    """Which runtime answers (`food_assets.ml.inference.serving.BACKENDS`)."""

    auto = "auto"
    onnxruntime = "onnxruntime"
    openvino = "openvino"
