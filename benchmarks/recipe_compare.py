"""The accuracy recipe against the plain training, on the embedded sample, in one run.

Each model trains twice from the same seed and the same splits: `plain` (the sample defaults:
crop, flip, label smoothing 0.1) and `recipe` (the switches `configs/food101.yaml` sets:
RandAugment / TrivialAugment, random erasing, mixup + CutMix switched off for the last epoch,
weight EMA with the better of raw/EMA kept, and for the transfer model layer-wise LR decay after
a frozen-backbone epoch). Both are evaluated on the same test images with the project's
`evaluate_bundle` (the recipe side also with flip TTA, reported beside its plain figure).

Printed per model: test top-1 with its 95 % bootstrap interval, training seconds, which
weights the recipe kept, and the paired difference recipe - plain with its own bootstrap
interval over the same test images. The target (ISSUE 16): the recipe does not lose accuracy
beyond that interval (`diff_ci_high >= 0`; the script exits 1 otherwise, except with
`--quick`), at the extra training time printed beside it.

The sample is made larger than the main job's so that the recipe has room to act (10 classes x
80 images at 128 px, 96 px training, 6 epochs).

    .venv/bin/python benchmarks/recipe_compare.py            # full size (target: ~6 min, 2 cores)
    .venv/bin/python benchmarks/recipe_compare.py --quick    # dry run at tiny sizes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: The recipe's switches per model kind, as configs/food101.yaml sets them (the epochs differ:
#: mixup_off_epochs is 1 here for the short schedule).
RECIPES = {
    "scratch": dict(
        augment="randaugment",
        augment_magnitude=7,
        random_erasing=0.25,
        mixup_alpha=0.1,
        cutmix_alpha=1.0,
        mixup_off_epochs=1,
        ema_decay=0.9998,
    ),
    "finetune": dict(
        augment="trivialaugment",
        mixup_alpha=0.2,
        cutmix_alpha=1.0,
        mixup_off_epochs=1,
        ema_decay=0.9998,
        layer_decay=0.85,
        frozen_epochs=1,
    ),
}
MODELS = {"custom_cnn": "scratch", "efficientnet_lite0": "finetune"}


def make_splits_on_sample(root: Path, args: argparse.Namespace):
    """The embedded sample at the benchmark's size, scanned and split as the assets do."""
    import pandas as pd

    from food_assets.ml.data.raw import collect_raw_images
    from food_assets.ml.data.sample import SampleSpec
    from food_assets.ml.data.splits import SplitManifest, make_splits

    spec = SampleSpec(num_classes=args.classes, images_per_class=args.per_class, image_size=128)
    raw = collect_raw_images(
        "sample",
        None,
        sources_dir=root / "sources",
        manifest_path=root / "raw.parquet",
        quarantine_path=root / "quarantine.parquet",
        sample=spec,
    )
    frame, names, _ = make_splits(
        pd.read_parquet(raw.manifest_path), val_fraction=0.15, test_fraction=0.25, seed=0
    )
    frame.to_parquet(root / "splits.parquet", index=False)
    return SplitManifest(root / "splits.parquet", names, "sample")


def train_and_evaluate(model: str, variant: str, splits, root: Path, args) -> dict:
    from food_assets.ml.evaluation import evaluate_bundle
    from food_assets.ml.training import ComputeConfig, TrainConfig, train_model

    kind = MODELS[model]
    cfg = TrainConfig(
        mode=kind,
        weights="none" if kind == "scratch" else "imagenet",
        on_missing_weights="error",
        epochs=args.epochs,
        batch_size=args.batch,
        lr=2e-3,
        image_size=args.image_size,
        warmup_epochs=min(1.0, args.epochs / 2),
        early_stopping_patience=None,
        limit_train_batches=args.limit_batches,
        seed=0,
    )
    if variant == "recipe":
        cfg = dataclasses.replace(cfg, **RECIPES[kind])  # re-runs TrainConfig's checks
    out = root / f"{model}-{variant}"
    t0 = time.perf_counter()
    fit = train_model(
        model, splits, cfg, ComputeConfig(accelerator="cpu", devices=1), out, progress_bar=False
    )
    seconds = time.perf_counter() - t0
    tta = "flip" if variant == "recipe" else "none"
    ev = evaluate_bundle(
        fit.bundle_dir, splits, out / "eval", device="cpu", n_bootstrap=args.bootstrap, tta=tta
    )
    s = ev.summary
    return {
        "model": model,
        "variant": variant,
        "acc": s["test/acc_top1"],
        "ci": (s["test/acc_top1_ci_low"], s["test/acc_top1_ci_high"]),
        "acc_tta": s.get("test/acc_top1_tta"),
        "tta_time_ratio": s.get("tta/time_ratio"),
        "train_seconds": fit.metadata["train_seconds"],
        "fit_seconds": seconds,
        "weights_kept": fit.metadata.get("weights_kept", "raw"),
        "hits": ev.predictions["correct"].to_numpy(dtype=float),
    }


def paired_difference(recipe: dict, plain: dict, n: int) -> tuple[float, float, float]:
    """recipe - plain top-1 with a paired bootstrap interval over the same test images."""
    from food_assets.ml.evaluation.metrics import bootstrap_ci

    diff = recipe["hits"] - plain["hits"]
    low, high = bootstrap_ci(diff, n_resamples=n, seed=0)
    return float(diff.mean()), float(low), float(high)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a dry run of the script")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--epochs", type=int, help="training epochs (default 6; --quick: 2)")
    args = p.parse_args()
    full = dict(classes=10, per_class=80, epochs=6, image_size=96, batch=32, bootstrap=1000)
    quick = dict(classes=4, per_class=12, epochs=2, image_size=32, batch=8, bootstrap=200)
    epochs = args.epochs
    for k, v in (quick if args.quick else full).items():
        setattr(args, k, v)
    if epochs is not None:
        if epochs < 2:
            p.error("--epochs must be >= 2 (mixup switches off for the last epoch)")
        args.epochs = epochs
    args.limit_batches = 2 if args.quick else None

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        splits = make_splits_on_sample(root, args)
        frame = splits.frame()
        counts = frame["split"].value_counts().to_dict()
        print(f"sample: {args.classes} classes, splits {counts}, {args.epochs} epochs at "
              f"{args.image_size} px")  # fmt: skip
        rows = []
        for model in args.models:
            plain = train_and_evaluate(model, "plain", splits, root, args)
            recipe = train_and_evaluate(model, "recipe", splits, root, args)
            diff = paired_difference(recipe, plain, args.bootstrap)
            rows.append((model, plain, recipe, diff))

    print()
    print("| model | plain top-1 (95 % CI) | recipe top-1 (95 % CI) | recipe + flip TTA | "
          "recipe - plain (95 % CI) | train s plain / recipe | kept | verdict |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    out = []
    for model, plain, recipe, (d, lo, hi) in rows:
        verdict = "no loss beyond the interval" if hi >= 0 else "LOSES"
        print(
            f"| {model} | {plain['acc']:.3f} [{plain['ci'][0]:.3f}, {plain['ci'][1]:.3f}] "
            f"| {recipe['acc']:.3f} [{recipe['ci'][0]:.3f}, {recipe['ci'][1]:.3f}] "
            f"| {recipe['acc_tta']:.3f} (x{recipe['tta_time_ratio']:.2f} time) "
            f"| {d:+.3f} [{lo:+.3f}, {hi:+.3f}] "
            f"| {plain['train_seconds']:.0f} / {recipe['train_seconds']:.0f} "
            f"(x{recipe['train_seconds'] / max(plain['train_seconds'], 1e-9):.2f}) "
            f"| {recipe['weights_kept']} | {verdict} |"
        )
        for r in (plain, recipe):
            out.append({k: v for k, v in r.items() if k != "hits"})
        out[-1]["diff_vs_plain"] = {"mean": d, "ci_low": lo, "ci_high": hi}
    print(f"\nwall: {time.perf_counter() - t_all:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float))
    if not args.quick and any(hi < 0 for *_, (_, _, hi) in rows):
        raise SystemExit(1)  # the target missed (a --quick dry run proves nothing either way)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
