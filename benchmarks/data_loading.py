"""Decoded-and-transformed images per second: the project's path against plain PIL.

Both paths produce the same model input (shorter side 256, centre crop 224, normalised tensor)
from Food-101-sized JPEGs (512 px on the longer side) generated here. The project's path
(`ImagePipeline`) asks libjpeg for a reduced-size decode (`Image.draft`) because the target is
much smaller than the source; the baseline opens, converts and resizes the full image.

    python benchmarks/data_loading.py            # 200 images, 5 rounds
    python benchmarks/data_loading.py --images 500 --rounds 7 --size 512

Prints images/s for each path (median over rounds, the two paths interleaved so machine noise
hits both) and the ratio project/baseline; the target is a ratio >= 1.0.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from food_assets.ml.data.sample import SAMPLE_CLASSES, render_sample_image
from food_assets.ml.data.transforms import ImagePipeline, Preprocess, build_transform


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    paths = []
    for i in range(n):
        img, _ = render_sample_image(SAMPLE_CLASSES[i % 10], i, seed=7, image_size=size)
        # Food-101 photos are 512 px on the longer side and mostly landscape.
        img = img.resize((size, int(size * 0.75)))
        path = folder / f"{i:05d}.jpg"
        img.save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def baseline(paths: list[Path], transform) -> torch.Tensor:
    out = None
    for p in paths:
        with Image.open(p) as img:
            out = transform(img.convert("RGB"))
    return out


def project(paths: list[Path], pipeline: ImagePipeline) -> torch.Tensor:
    out = None
    for p in paths:
        out = pipeline(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=512, help="longer side of the generated JPEGs")
    ap.add_argument("--input-size", type=int, default=224)
    args = ap.parse_args()
    torch.set_num_threads(1)  # per-image work; a DataLoader parallelises over workers

    pre = Preprocess(input_size=args.input_size)
    pipeline = ImagePipeline(pre, train=False)
    transform = build_transform(pre, train=False)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), args.images, args.size)
        # Same output shape; values differ slightly (the draft decode is a DCT-domain downscale).
        a, b = project(paths[:1], pipeline), baseline(paths[:1], transform)
        assert a.shape == b.shape, (a.shape, b.shape)
        rates = {"baseline (PIL open/convert/resize)": [], "food_assets ImagePipeline": []}
        for _ in range(args.rounds):
            t = time.perf_counter()
            baseline(paths, transform)
            rates["baseline (PIL open/convert/resize)"].append(
                len(paths) / (time.perf_counter() - t)
            )
            t = time.perf_counter()
            project(paths, pipeline)
            rates["food_assets ImagePipeline"].append(len(paths) / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"{args.images} JPEGs of {args.size}x{int(args.size * 0.75)} -> {args.input_size} px, "
        f"{args.rounds} rounds, 1 thread"
    )
    for name, rate in med.items():
        print(f"  {name:40s} {rate:8.1f} images/s")
    ratio = med["food_assets ImagePipeline"] / med["baseline (PIL open/convert/resize)"]
    print(f"  ratio project/baseline: {ratio:.2f}x (target >= 1.0)")


if __name__ == "__main__":
    main()
