"""Dagster run storage per run: plots as paths, as small embedded pictures, or as full base64.

Materializes the data assets and every per-model asset of `--models` (model, evaluation,
Grad-CAM, ONNX, with their checks) in process on a tiny sample, once per mode, each into its
own persistent SQLite Dagster instance (a fresh temporary DAGSTER_HOME) and its own data folder:

- `inline` (the project before ADR 0011): every plot's PNG embedded in the asset's metadata
  as a base64 Markdown image (the old `md_image`);
- `paths` (the project between ADR 0011 and ADR 0024): every plot is a `MetadataValue.path` /
  `url` to the PNG under the artifact root, no picture;
- `project` (the project, ADR 0024): the paths, plus small pictures (`assets._pictures`, at
  most 40,000 characters each) of each evaluation's confusion matrix and reliability diagram
  and of a strip of Grad-CAM tiles.

Prints, for each, the sum of `length(event)` over the `event_logs` table of every SQLite file
of the instance (the serialized events: metadata included), the bytes of the metadata values
of the materializations, and the total size of the instance's .db files; then how much the
pictures add (`project` - `paths`), in all and per model, and the ratios.

    .venv/bin/python benchmarks/event_log_size.py                          # custom_cnn + lite0
    .venv/bin/python benchmarks/event_log_size.py --models custom_cnn --classes 4
    .venv/bin/python benchmarks/event_log_size.py --classes 101 --modes paths,project
    DAGSTER_HOME=$PWD .venv/bin/python benchmarks/event_log_size.py --run RUN_ID   # a past run

`--run` measures a run already in the instance at DAGSTER_HOME (the one `make run` printed):
its events' serialized bytes and how many of them are the pictures' Markdown.
"""

from __future__ import annotations

import argparse
import base64
import os
import sqlite3
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def _inline_png(path, store=None):
    """The old `md_image`: the PNG's bytes as a data URI in Markdown."""
    import dagster as dg

    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return dg.MetadataValue.md(f"![figure](data:image/png;base64,{data})")


#: The embedded sample source makes at most this many classes; more come from a generated
#: Food-101-shaped tree (benchmarks/synthetic_food101.py) read by the `food101` source.
SAMPLE_MAX_CLASSES = 10


def _source_config(classes: int, per_class: int, work: Path) -> dict:
    """The `food_images_raw` config: the sample, or for more classes a Food-101-like tree."""
    if classes <= SAMPLE_MAX_CLASSES:
        return {
            "sample_num_classes": classes,
            "sample_images_per_class": per_class,
            "sample_image_size": 64,
        }
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.` from a script
    from benchmarks.synthetic_food101 import make_food101_like

    tree = make_food101_like(
        work / "food101_like", classes=classes, per_class=per_class, image_size=(64, 64)
    )
    return {"source": "food101", "root": str(tree.parent)}


def _run(mode: str, models: list[str], source: dict, work: Path) -> dict:
    import dagster as dg

    from food_assets.definitions import build_definitions, default_resources
    from food_assets.defs.assets import evaluation, explain
    from food_assets.defs.assets import models as model_assets
    from food_assets.defs.resources import QualityGates

    modules = (model_assets, evaluation, explain)
    saved = {m: m.file_ref for m in modules}
    saved_pictures = {m: m.picture for m in (evaluation, explain)}
    if mode == "inline":
        for m in modules:
            m.file_ref = _inline_png
    if mode in ("inline", "paths"):  # neither had the small pictures
        for m in saved_pictures:
            m.picture = lambda *args, **kwargs: {}
    try:
        home = work / mode / "dagster_home"
        home.mkdir(parents=True)
        resources = default_resources(str(work / mode / "data"))
        resources["quality"] = QualityGates(accuracy={"sample/*": 0.0, "food101/*": 0.0})
        defs = build_definitions(resources)
        # The data assets and every per-model asset of `models` (with their checks); the
        # leaderboard takes every registry model as an input, so it is left out.
        selection = ["food_images_raw", "food_splits"] + [
            f"{kind}_{name}"
            for name in models
            for kind in ("model", "evaluation", "gradcam", "onnx")
        ]
        ops: dict = {"food_images_raw": {"config": source}}
        for name in models:
            ops[f"model_{name}"] = {"config": {"epochs": 2, "image_size": 48, "batch_size": 16}}
            ops[f"evaluation_{name}"] = {"config": {"n_bootstrap": 200}}
        t0 = time.perf_counter()
        with dg.DagsterInstance.local_temp(str(home)) as instance:
            result = dg.materialize(
                [*defs.assets, *defs.asset_checks],
                selection=selection,
                resources=resources,
                run_config={"ops": ops},
                instance=instance,
                raise_on_error=False,
            )
            meta_bytes = sum(
                len(str(getattr(v, "value", v)))
                for e in result.get_asset_materialization_events()
                for v in e.materialization.metadata.values()
            )
            pictures = [
                len(v.value)
                for e in result.get_asset_materialization_events()
                for k, v in e.materialization.metadata.items()
                if k.endswith("_preview")
            ]
            if not result.success:  # a table of zeros would read as a measurement
                failure = next(e for e in result.all_events if e.is_step_failure)
                error = failure.step_failure_data.error
                why = error.message.strip() if error else failure.message
                raise SystemExit(f"{mode}: step {failure.step_key} failed: {why}")
        seconds = time.perf_counter() - t0
    finally:
        for m, f in saved.items():
            m.file_ref = f
        for m, f in saved_pictures.items():
            m.picture = f
    event_bytes, db_bytes = 0, 0
    for db in home.rglob("*.db"):
        db_bytes += db.stat().st_size
        with sqlite3.connect(db) as conn:
            tables = {r[0] for r in conn.execute("select name from sqlite_master")}
            if "event_logs" in tables:
                event_bytes += conn.execute(
                    "select coalesce(sum(length(event)), 0) from event_logs"
                ).fetchone()[0]
    return {
        "success": result.success,
        "materializations": len(result.get_asset_materialization_events()),
        "event_bytes": event_bytes,
        "metadata_bytes": meta_bytes,
        "db_bytes": db_bytes,
        "pictures": len(pictures),
        "largest_picture": max(pictures, default=0),
        "seconds": seconds,
    }


def measure_run(run_id: str) -> None:
    """Print the serialized size of one run's events and the share of the pictures in them."""
    import dagster as dg
    from dagster._serdes import serialize_value

    with dg.DagsterInstance.get() as instance:
        total, pictures, count = 0, 0, 0
        for entry in instance.all_logs(run_id):
            total += len(serialize_value(entry))
            event = entry.dagster_event
            if event is not None and event.is_step_materialization:
                meta = event.step_materialization_data.materialization.metadata
                for key, value in meta.items():
                    if key.endswith("_preview"):
                        pictures += len(serialize_value(value))
                        count += 1
    print(f"run {run_id}: events {total:,} bytes serialized; {count} pictures, {pictures:,} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="measure this run of the instance at DAGSTER_HOME")
    parser.add_argument("--models", default="custom_cnn,efficientnet_lite0")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument("--modes", default="inline,paths,project", help="comma-separated")
    args = parser.parse_args()
    if args.run:
        measure_run(args.run)
        return
    models = [m for m in args.models.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="event_log_size_") as tmp:
        source = _source_config(args.classes, args.per_class, Path(tmp))
        for mode in modes:
            rows[mode] = _run(mode, models, source, Path(tmp))
    kind = "sample" if args.classes <= SAMPLE_MAX_CLASSES else "Food-101-like tree"
    print(f"models: {', '.join(models)}; {kind}: {args.classes} classes x {args.per_class} images")
    print(
        f"{'plots':<10} {'ok':<5} {'mats':>5} {'event_logs bytes':>17} {'metadata bytes':>15} "
        f"{'sqlite files':>13} {'pictures':>9} {'largest':>8} {'seconds':>8}"
    )
    for mode, r in rows.items():
        print(
            f"{mode:<10} {str(r['success']):<5} {r['materializations']:>5} "
            f"{r['event_bytes']:>17,} {r['metadata_bytes']:>15,} {r['db_bytes']:>13,} "
            f"{r['pictures']:>9} {r['largest_picture']:>8,} {r['seconds']:>8.1f}"
        )
    if "paths" in rows and "project" in rows:
        grown = rows["project"]["event_bytes"] - rows["paths"]["event_bytes"]
        print(
            f"pictures add (project - paths): {grown:,} bytes of event log, "
            f"{grown / len(models):,.0f} per model"
        )
    if "inline" in rows:
        a = rows["inline"]
        for mode in (m for m in ("paths", "project") if m in rows):
            b = rows[mode]
            print(
                f"{mode} / inline: event_logs {b['event_bytes'] / a['event_bytes']:.3f}, "
                f"metadata {b['metadata_bytes'] / max(a['metadata_bytes'], 1):.3f}, "
                f"sqlite files {b['db_bytes'] / a['db_bytes']:.3f}"
            )


if __name__ == "__main__":
    main()
