"""Data sources: where the images come from, as one listing of (path, label, ...) rows.

- `sample`: the embedded synthetic set (`ml/data/sample.py`), generated on the spot.
- `imagefolder`: any `root/<class>/<image>` tree (images may sit in sub-folders of a class).
- `food101`: torchvision's Food-101 layout (`images/<class>/<id>.jpg`, `meta/train.txt`,
  `meta/test.txt`); a local copy is used as is, a download happens only when asked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from food_assets.ml.data.sample import SampleSpec, generate_sample, read_boxes
from food_assets.ml.errors import DataSourceError

SourceKind = Literal["sample", "imagefolder", "food101"]
LISTING_COLUMNS = ["path", "label", "source_split", "box_x0", "box_y0", "box_x1", "box_y1"]


@dataclass(frozen=True)
class SourceListing:
    """What a source yields before the scan: candidate files and the hidden ones passed over."""

    files: pd.DataFrame  # LISTING_COLUMNS
    skipped_hidden: list[str]
    root: Path


def _hidden(rel_parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in rel_parts)


def list_imagefolder(root: str | Path) -> SourceListing:
    """List `root/<class>/**/<file>`; hidden files and folders are skipped (and reported)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataSourceError(
            f"imagefolder root {root} does not exist: set `root` to a folder laid out as "
            "root/<class>/<image>"
        )
    if not root.is_dir():
        raise DataSourceError(f"imagefolder root {root} is a file, not a folder")
    rows, hidden = [], []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    for class_dir in class_dirs:
        if _hidden((class_dir.name,)):
            hidden.append(str(class_dir))
            continue
        for dirpath, dirnames, filenames in os.walk(class_dir):
            rel = Path(dirpath).relative_to(root).parts
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if _hidden(rel + (name,)):
                    hidden.append(str(path))
                    continue
                rows.append((str(path.resolve()), class_dir.name))
    if not rows:
        detail = "no class folders" if not class_dirs else "class folders hold no files"
        raise DataSourceError(
            f"imagefolder root {root} is empty ({detail}): expected root/<class>/<image> files"
        )
    files = pd.DataFrame(rows, columns=["path", "label"])
    files["source_split"] = None
    for col in LISTING_COLUMNS[3:]:
        files[col] = float("nan")
    return SourceListing(files[LISTING_COLUMNS], hidden, root)


def list_sample(root: str | Path, spec: SampleSpec) -> SourceListing:
    """Generate (or reuse) the sample set and list it with each image's object box."""
    folder = generate_sample(root, spec)
    listing = list_imagefolder(folder)
    boxes = read_boxes(folder)
    files = listing.files
    rel = files["path"].map(lambda p: Path(p).relative_to(folder.resolve()).as_posix())
    for i, col in enumerate(("box_x0", "box_y0", "box_x1", "box_y1")):
        files[col] = rel.map(lambda r, i=i: float(boxes[r][i]) if r in boxes else float("nan"))
    return SourceListing(files, listing.skipped_hidden, folder)


def _food101_base(root: Path) -> Path | None:
    for base in (root / "food-101", root):
        if (base / "meta" / "train.txt").is_file() and (base / "images").is_dir():
            return base
    return None


def list_food101(root: str | Path, *, download: bool = False) -> SourceListing:
    """List a Food-101 copy, keeping the official train/test split in `source_split`."""
    root = Path(root).expanduser()
    base = _food101_base(root)
    if base is None and download:
        from torchvision.datasets import Food101

        try:
            # torchvision's own downloader (about 5 GB); it checks the archive's MD5.
            Food101(str(root), split="train", download=True)
        except Exception as exc:  # network errors come in many types
            raise DataSourceError(
                f"downloading Food-101 into {root} failed ({type(exc).__name__}: {exc}). "
                "Download food-101.tar.gz by other means, unpack it under that folder, and run "
                "again with download: false."
            ) from exc
        base = _food101_base(root)
    if base is None:
        raise DataSourceError(
            f"no Food-101 copy at {root}: expected {root}/food-101/images and "
            f"{root}/food-101/meta/train.txt (torchvision's layout). Set `root` to a local copy, "
            "or set `download: true` on a machine that can reach the dataset host."
        )
    rows, hidden = [], []
    for split in ("train", "test"):
        meta = base / "meta" / f"{split}.txt"
        if not meta.is_file():
            raise DataSourceError(f"Food-101 copy at {base} lacks meta/{split}.txt")
        for line in meta.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            label = line.split("/", 1)[0]
            path = base / "images" / f"{line}.jpg"
            rows.append((str(path.resolve()), label, split))
    files = pd.DataFrame(rows, columns=["path", "label", "source_split"])
    for col in LISTING_COLUMNS[3:]:
        files[col] = float("nan")
    return SourceListing(files[LISTING_COLUMNS], hidden, base)
