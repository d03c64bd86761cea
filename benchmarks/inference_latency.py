"""Eager PyTorch vs ONNX Runtime latency on the CPU for the registry CNNs.

Each model (random weights, 101 classes) is exported with `export_onnx`, checked for parity, then
timed with `measure_latency`: both backends in one process, after warm-up, alternating calls so
load from other processes hits both alike. The figure to read is the ratio ORT / eager (target
<= 0.8 at batch 1); absolute milliseconds drift 2x between runs on a shared machine.

    .venv/bin/python benchmarks/inference_latency.py
    .venv/bin/python benchmarks/inference_latency.py --models resnet50 --size 160 --csv out.csv
    .venv/bin/python benchmarks/inference_latency.py --models resnet18   # any timm name works too
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import pandas as pd
import torch

from food_assets.ml.artifacts import scratch_dir, write_text
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.export import check_parity, export_onnx, latency_ratio, measure_latency
from food_assets.ml.export.onnx_export import default_threads
from food_assets.ml.models.bundle import ModelCard
from food_assets.ml.models.registry import create_model, get_model_spec, list_models

DEFAULT_MODELS = ("custom_cnn", "resnet50", "efficientnet_b0", "efficientnet_lite0")
NUM_CLASSES = 101


def build(name: str) -> tuple[torch.nn.Module, Preprocess]:
    """A registry model by name, else a timm model of that name (random weights either way)."""
    if name in list_models():
        return create_model(name, num_classes=NUM_CLASSES, weights="none"), get_model_spec(
            name
        ).preprocess()
    import timm

    if name not in timm.list_models():
        sys.exit(
            f"{name!r} is neither a registry model ({', '.join(list_models())}) nor a timm one"
        )
    return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES), Preprocess()


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    ap.add_argument("--size", type=int, default=224, help="input size (px)")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--repeats", type=int, default=20, help="timed calls at batch 1")
    ap.add_argument("--repeats-large", type=int, default=3, help="timed calls at larger batches")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="default: usable cores")
    ap.add_argument("--csv", default=None, help="also write the raw rows here")
    args = ap.parse_args(argv)

    threads = args.threads or default_threads()
    print(
        f"torch {torch.__version__}, threads {threads}, size {args.size}, "
        f"repeats {args.repeats} (batch 1) / {args.repeats_large} (larger), warmup {args.warmup}"
    )
    repeats = {b: (args.repeats if b == 1 else args.repeats_large) for b in args.batch_sizes}
    # A batch of 32 is its own warm-up after one call; more would only lengthen the run.
    warmup = {b: (args.warmup if b == 1 else min(args.warmup, 1)) for b in args.batch_sizes}
    work = scratch_dir("latency-")
    rows = []
    t_start = time.perf_counter()
    try:
        for name in args.models:
            torch.manual_seed(0)
            model, pre = build(name)
            model.eval()
            card = ModelCard(
                name=name,
                class_names=[f"class_{i}" for i in range(NUM_CLASSES)],
                preprocess=pre.with_size(args.size),
            )
            t0 = time.perf_counter()
            path = export_onnx(model, card, work / f"{name}.onnx")
            t_export = time.perf_counter() - t0
            parity = check_parity(path, model, torch.randn(2, 3, args.size, args.size))
            frame = measure_latency(
                model, path, args.size, args.batch_sizes, repeats, warmup,
                name=name, threads=threads,
            )  # fmt: skip
            rows.append(frame)
            print(
                f"  {name}: export {t_export:.1f}s, {os.path.getsize(path) / 1e6:.1f} MB, "
                f"parity max|diff| {parity.max_abs_diff:.1e} ({'ok' if parity.passed else 'FAIL'})",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raw = pd.concat(rows, ignore_index=True)
    table = latency_ratio(raw)
    pd.set_option("display.width", 120)
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\ntotal {time.perf_counter() - t_start:.0f}s")
    if args.csv:
        write_text(args.csv, raw.to_csv(index=False))
    return raw


if __name__ == "__main__":
    main()
