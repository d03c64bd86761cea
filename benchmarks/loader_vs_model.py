"""Does the input pipeline keep up with the model? Loader images/s against the model's step rate.

Both in one run, on one machine:

- **model**: training steps of the registry model on a batch already on the device (no loader,
  no decode, no copy): the most the GPU can train (`in_memory_images_per_s`, the same Trainer,
  precision, channels_last and compile as `train_model`).
- **loader**: the training DataLoader alone (`SplitDataModule`, workers, pinned memory,
  prefetch, as the compute config resolves them), each batch made model-ready on the device
  (`transfer_batch_to_device`: with GPU decode, nvjpeg and the GPU transforms run there).

The target is loader >= 0.9 x model: then the GPU never waits for data. The data is a
Food-101-shaped tree (`make_food101_like`, 512x384 JPEGs). Meant for a GPU; on the CPU it runs
and prints what it is (GPU decode then runs on the CPU too, with `--gpu-decode on`).

    python benchmarks/loader_vs_model.py --accelerator gpu                 # CUDA, auto settings
    python benchmarks/loader_vs_model.py --accelerator gpu --gpu-decode off --workers 15
    .venv/bin/python benchmarks/loader_vs_model.py --model custom_cnn --classes 5 --per-class 20 \\
        --image-size 64 --batch-size 16 --batches 5 --precision 32-true    # CPU smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 0.9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--accelerator", default="auto", help="auto | cpu | gpu")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--batches", type=int, default=30, help="timed batches on each side")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", default="auto", help='loader_workers: "auto" or a count')
    parser.add_argument("--gpu-decode", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    import pandas as pd

    from benchmarks.synthetic_food101 import make_food101_like
    from benchmarks.throughput import in_memory_images_per_s, loader_images_per_s
    from food_assets.ml.data.raw import collect_raw_images
    from food_assets.ml.data.splits import SplitManifest, make_splits
    from food_assets.ml.models.registry import get_model_spec
    from food_assets.ml.training import ComputeConfig, TrainConfig
    from food_assets.ml.training.compute import expects_cuda, resolve_loader
    from food_assets.ml.training.datamodule import SplitDataModule

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="loader_vs_model_"))
    root = make_food101_like(work / "src", classes=args.classes, per_class=args.per_class)
    raw = collect_raw_images(
        "food101", root.parent, sources_dir=work, manifest_path=work / "manifest.parquet",
        quarantine_path=work / "quarantine.parquet",
    )  # fmt: skip
    frame, names, _ = make_splits(pd.read_parquet(raw.manifest_path), val_fraction=0.1)
    frame.to_parquet(work / "splits.parquet", index=False)
    splits = SplitManifest(work / "splits.parquet", tuple(names), "food101")

    # The CPU takes gpu_decode "on" only through the loader settings (ComputeConfig refuses it
    # without CUDA); the model side never decodes.
    compute = ComputeConfig(
        accelerator=args.accelerator, devices=1, precision=args.precision,
        loader_workers=args.workers, compile=args.compile,
        gpu_decode="auto" if args.gpu_decode == "on" else args.gpu_decode,
    )  # fmt: skip
    cuda = expects_cuda(compute)
    device = "cuda" if cuda else "cpu"
    cfg = TrainConfig(
        mode="scratch", batch_size=args.batch_size, image_size=args.image_size, num_workers=0
    )
    loader = resolve_loader(compute, cfg, cuda=cuda)
    if args.gpu_decode == "on":
        loader = dataclasses.replace(loader, gpu_decode=True)
    preprocess = get_model_spec(args.model).preprocess().with_size(args.image_size)
    dm = SplitDataModule(splits, preprocess, batch_size=args.batch_size, loader=loader)
    n_train = int((frame["split"] == "train").sum())
    print(f"device {device}; {n_train} train images; loader {loader}")

    loader_rate, timed = loader_images_per_s(dm, device, batches=args.batches, warmup=args.warmup)
    model_rate = in_memory_images_per_s(
        args.model, cfg, compute, work / "model", num_classes=len(names), steps=args.batches,
        warmup=args.warmup, device=device,
    )  # fmt: skip
    ratio = loader_rate / model_rate
    print(f"loader: {loader_rate:,.1f} images/s over {timed} batches")
    print(f"model ({args.model}, in-memory, {args.precision}): {model_rate:,.1f} images/s")
    verdict = "meets" if ratio >= TARGET else "misses"
    print(f"loader / model = {ratio:.2f} ({verdict} the {TARGET}x target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
