"""`food-assets models`: the registry's models and what has been materialized for each."""

from __future__ import annotations

import typer
from rich.table import Table

from food_assets.cli.common import data_dir, stdout_console, user_errors


@user_errors
def models(ctx: typer.Context) -> None:
    """List the registry's models and what has been materialized (bundle, ONNX and which
    precision `--precision auto` serves, accuracy)."""
    from food_assets import catalog
    from food_assets.ml.models.registry import get_model_spec, list_models

    storage = catalog.open_storage(data_dir(ctx))
    found = {m.name: m for m in catalog.list_materialized(storage)}
    table = Table(title=f"models (artifacts under {storage.url})", title_justify="left")
    columns = ("model", "family", "default weights", "exportable", "bundle", "ONNX", "auto serves",
               "test acc")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right" if col == "test acc" else "left")
    for name in list_models():
        spec = get_model_spec(name)
        m = found.get(name)
        acc = m.accuracy if m else None
        table.add_row(
            name,
            spec.family,
            spec.default_weights,
            "yes" if spec.onnx else "no",
            "yes" if m and m.bundle_dir else "-",
            "yes" if m and m.onnx_path else "-",
            _served(m.onnx_path) if m and m.onnx_path else "-",
            f"{acc:.3f}" if isinstance(acc, int | float) else "-",
        )
    stdout_console().print(table)
    _print_variants(found)
    default = _default(found, storage, data_dir(ctx))
    if default is not None:
        typer.echo(f"Default for `predict` and the demo: {default.model.name} ({default.how}).")
    champion = _champion(data_dir(ctx))
    if champion:
        typer.echo(f"MLflow registry champion: {champion}")
    typer.echo(
        "Train one with `food-assets train NAME`; predict with `food-assets predict -m NAME`."
    )


def _default(found, storage, root):
    """The default `predict` and the demo use (`resolver.default_model`, nothing downloaded), or
    None when nothing is materialized."""
    from food_assets.ml.errors import UnknownModelError
    from food_assets.resolver import default_model

    try:
        return default_model(found, storage, root, download=False)
    except UnknownModelError:
        return None


def _served(onnx_path) -> str:
    """The `auto serves` cell: what `predict --precision auto` would load from the export (the
    serving rule, `ml/inference/serving.py`); an unreadable export says so, the table still
    prints."""
    from food_assets.ml.errors import FoodAssetsError
    from food_assets.ml.inference.serving import auto_label

    try:
        return auto_label(onnx_path)
    except FoodAssetsError as exc:
        return f"unreadable ({type(exc).__name__})"


def _print_variants(found) -> None:
    """One table of every exported model's serving variants: gate verdict, latency at batch 1
    and 32 (measured together at export) and which one `auto` serves (the serving rule)."""
    from food_assets.ml.errors import FoodAssetsError
    from food_assets.ml.inference.serving import describe_variants

    table = Table(title="serving variants (latency: ms per call, measured at export)",
                  title_justify="left")  # fmt: skip
    for col in ("model", "variant", "gate", "b1 ms", "b32 ms", "auto"):
        table.add_column(col, justify="right" if col.endswith("ms") else "left")
    for name in sorted(found):
        m = found[name]
        if not m.onnx_path:
            continue
        try:
            rows = describe_variants(m.onnx_path)
        except FoodAssetsError as exc:
            table.add_row(name, "-", f"unreadable ({type(exc).__name__})", "-", "-", "")
            continue
        for r in rows:
            table.add_row(
                name,
                r["variant"],
                r["verdict"],
                f"{r['ms_b1']:.2f}" if r["ms_b1"] is not None else "-",
                f"{r['ms_b32']:.2f}" if r["ms_b32"] is not None else "-",
                "<- auto" if r["auto"] else "",
            )
    if table.row_count:
        stdout_console().print(table)


def _champion(root) -> str | None:
    """The champion line's text: `models:/food_assets.<name>@champion (version N)`, or why there
    is none (no alias, several holders, an unreachable store). None when no MLflow store exists
    yet (nothing was ever registered: no line). Listing never fails because of MLflow."""
    from pathlib import Path

    from food_assets.ml.errors import FoodAssetsError
    from food_assets.tracking import model_registry

    uri = model_registry.registry_uri(root)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        return None
    try:
        found = model_registry.find_registered_version(model_registry.CHAMPION, uri=uri)
    except FoodAssetsError as exc:  # no alias yet, or several holders: say so
        return f"not resolved: {exc}"
    except Exception as exc:  # an unreachable server, a broken store: the table still prints
        return f"unknown ({type(exc).__name__}: {exc})"
    return (
        f"{found.uri} (version {found.version}; "
        f"`predict --model {model_registry.CHAMPION}` loads it)"
    )
