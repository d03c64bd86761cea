"""Decoded-and-transformed images per second: the project's path against torchvision.io and PIL.

All paths produce the model input for evaluation (shorter side `input_size / 0.875`, centre crop
`input_size`, normalised float tensor) from Food-101-sized JPEGs (512x384) generated here, with
one thread:

- `torchvision.io decode + transform` (the baseline: the strong one a competent user picks):
  libjpeg-turbo straight to a uint8 tensor with EXIF orientation applied (as ImagePipeline
  does), the transform then runs on the tensor.
- `PIL open/convert + transform` (second column): what torchvision's `ImageFolder` default
  loader and most training scripts do, `Image.open(p).convert("RGB")` then the transform. It
  is also the reference the values are compared with.
- `food_assets ImagePipeline`: picks per file. A JPEG at least twice the resize size on its
  shorter side is decoded by PIL with `Image.draft` (libjpeg decodes at 1/2, 1/4 or 1/8 scale);
  any other JPEG goes through `torchvision.io` as above.

At the default 224 px the resize size is 256 and a 384 px shorter side is under 2 x 256, so no
draft decode happens: `ImagePipeline` takes the `torchvision.io` path, and its gain over the
PIL column is the tensor decode and resize (ADR 0006), and against the torchvision.io baseline
it can only match it. `--input-size 112` (resize 128 <= 384 / 2)
takes the draft path (1/2-scale decode).

Outputs are compared by value before timing, on `--compare` images: the absolute difference
between each path's tensor and PIL's, in 8-bit levels (normalised difference x std x
255). Tolerance: mean <= 1 level per image and max <= 32 levels (an exit code of 1 otherwise);
a draft decode is a DCT-domain downscale, so it differs a little from decode-then-resize.

    .venv/bin/python benchmarks/data_loading.py                     # 200 images, 5 rounds
    .venv/bin/python benchmarks/data_loading.py --input-size 112    # the draft path
    .venv/bin/python benchmarks/data_loading.py --images 500 --rounds 7

Prints images/s for each path (median over rounds, the paths interleaved so machine noise hits
all) and the ratios: the headline is food_assets / torchvision.io (target >= 1.0: never slower
than the strong baseline), then food_assets / PIL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from food_assets.ml.data.sample import SAMPLE_CLASSES, render_sample_image
from food_assets.ml.data.transforms import ImagePipeline, Preprocess, build_transform

PIL = "PIL open/convert + transform"
TVIO = "torchvision.io decode + transform (baseline)"
PROJECT = "food_assets ImagePipeline"
MEAN_TOL, MAX_TOL = 1.0, 32.0  # 8-bit levels


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=512, help="longer side of the generated JPEGs")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--compare", type=int, default=50, help="images compared by value")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]  # the machine is shared: say how busy it was
    torch.set_num_threads(1)  # per-image work; a DataLoader parallelises over workers
    from torchvision.io import ImageReadMode, decode_image, read_file

    pre = Preprocess(input_size=args.input_size)
    pipeline = ImagePipeline(pre, train=False)
    transform = build_transform(pre, train=False)
    levels = torch.tensor(pre.std).view(3, 1, 1) * 255  # normalised units -> 8-bit levels

    def pil(p: Path) -> torch.Tensor:
        with Image.open(p) as img:
            return transform(img.convert("RGB"))

    def tvio(p: Path) -> torch.Tensor:
        # EXIF orientation on, as ImagePipeline does: the same (correct) output for a phone
        # photo, so the comparison is like with like (it costs ~10 % of a decode here).
        data = read_file(str(p))
        return transform(decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True))

    paths_fns = {TVIO: tvio, PIL: pil, PROJECT: pipeline}
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), args.images, args.size)
        h = int(args.size * 0.75)
        # Which decoder ImagePipeline really picked, and the size it decoded at.
        decoded = pipeline._decode(paths[0])
        if isinstance(decoded, Image.Image):
            route = f"PIL with draft, decoded at {decoded.width}x{decoded.height}"
        else:
            route = f"torchvision.io, decoded at {decoded.shape[2]}x{decoded.shape[1]} (no draft)"
        diffs: dict[str, tuple[float, float]] = {}
        for name in (TVIO, PROJECT):
            worst_mean = worst_max = 0.0
            for p in paths[: args.compare]:
                d = (paths_fns[name](p) - pil(p)).abs() * levels
                worst_mean, worst_max = (
                    max(worst_mean, float(d.mean())),
                    max(worst_max, float(d.max())),
                )
            diffs[name] = (worst_mean, worst_max)
        rates: dict[str, list[float]] = {name: [] for name in paths_fns}
        order = list(paths_fns)
        for r in range(args.rounds):
            for name in order[r % 3 :] + order[: r % 3]:  # rotate who goes first
                fn = paths_fns[name]
                t = time.perf_counter()
                for p in paths:
                    fn(p)
                rates[name].append(len(paths) / (time.perf_counter() - t))

    print(
        f"{args.images} JPEGs of {args.size}x{h} -> resize {pre.resize_size}, crop "
        f"{args.input_size} px; {args.rounds} rounds, 1 thread; ImagePipeline: {route}"
    )
    print(
        f"values vs PIL on {min(args.compare, args.images)} images, 8-bit levels, worst image "
        f"(tolerance mean <= {MEAN_TOL:g}, max <= {MAX_TOL:g}):"
    )
    ok = True
    for name, (mean, mx) in diffs.items():
        good = mean <= MEAN_TOL and mx <= MAX_TOL
        ok &= good
        print(
            f"  {name:40s} mean |diff| {mean:.3f}, max |diff| {mx:.1f}  {'ok' if good else 'FAIL'}"
        )
    med = {k: statistics.median(v) for k, v in rates.items()}
    for name, rate in med.items():
        print(f"  {name:40s} {rate:8.1f} images/s")
    for label, num, den in (
        ("food_assets / torchvision.io (baseline)", PROJECT, TVIO),
        ("food_assets / PIL", PROJECT, PIL),
        ("torchvision.io / PIL", TVIO, PIL),
    ):
        target = " (target >= 1.0)" if den == TVIO else ""
        print(f"  ratio {label:40s} {med[num] / med[den]:.2f}x{target}")
    print(f"load average (1 min): {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
