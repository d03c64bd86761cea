"""Materialize one export and the leaderboard again on the shared `graph_run` (conftest.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def rematerialized_export(
    graph_run: dict, name: str, resources: dict | None = None
) -> Iterator[Any]:
    """`onnx_<name>` and `leaderboard` materialized again (the graph's resources unless given),
    yielding Dagster's result; the export folder is put back afterwards, so the tests that read
    the shared graph later see it as it was built."""
    import dagster as dg

    out = graph_run["data_dir"] / "artifacts" / f"onnx_{name}"
    backup = out.with_name(out.name + ".bak")
    shutil.copytree(out, backup)
    try:
        defs = graph_run["defs"]
        yield dg.materialize(
            [*defs.assets, *defs.asset_checks],
            selection=dg.AssetSelection.assets(f"onnx_{name}", "leaderboard"),
            resources=resources or graph_run["resources"],
            instance=graph_run["instance"],
            raise_on_error=False,
        )
    finally:
        shutil.rmtree(out)
        backup.rename(out)
