"""Generate a Food-101-shaped tree (torchvision's layout, Food-101's sizes, learnable classes).

A thin command line over `benchmarks.synthetic_food101.make_food101_like`, which
documents the layout. The full size is the default (101 classes x 1,000 JPEGs, about 4.6 GB):

    .venv/bin/python benchmarks/make_food101_like.py --root data/food101_like
    .venv/bin/python benchmarks/make_food101_like.py --root /tmp/f101 --classes 5 --per-class 20

Then `source: food101` with `root: <--root>`, or `benchmarks/scale.py --root <--root>`.
A second run with the same arguments reuses the tree.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.` from a script

from benchmarks.synthetic_food101 import make_food101_like  # noqa: E402
from food_assets.ml.errors import ConfigError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="folder that will hold food-101/")
    ap.add_argument("--classes", type=int, default=101, help="1..101 (default 101)")
    ap.add_argument("--per-class", type=int, default=1000, help="images per class (default 1000)")
    ap.add_argument("--width", type=int, default=512, help="landscape width (default 512)")
    ap.add_argument("--height", type=int, default=384, help="landscape height (default 384)")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: CPUs)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    try:
        folder = make_food101_like(
            args.root,
            classes=args.classes,
            per_class=args.per_class,
            image_size=(args.width, args.height),
            workers=args.workers,
            seed=args.seed,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    n = args.classes * args.per_class
    print(f"{folder}: {args.classes} classes x {args.per_class} images ({n}) in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
