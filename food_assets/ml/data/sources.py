"""Data sources: where the images come from, as one listing of (path, label, ...) rows.

- `sample`: the embedded synthetic set (`ml/data/sample.py`), generated on the spot.
- `imagefolder`: any `root/<class>/<image>` tree (images may sit in sub-folders of a class).
  Listing opens no file and enters no symlink: every entry that is not a plain sub-folder (a
  fifo, a broken or looping symlink, a symlink to a folder, a folder that cannot be listed)
  is listed as is, and the scan quarantines it with its reason (see `scan.py`). A folder named
  like an image (`x.jpg/`) is an ordinary sub-folder and is walked into.
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


def _own_path(path: Path) -> str:
    """`path` made canonical up to its parent, so a symlink keeps its own name.

    os.path.realpath (not strict) never raises, even on a looping parent.
    """
    return os.path.join(os.path.realpath(path.parent), path.name)


def _listed_path(path: Path) -> str:
    """The canonical path of an entry; an entry that does not resolve keeps its own name.

    `resolve` raises on a symlink loop (RuntimeError up to Python 3.12) and, strict, on a
    dangling symlink; keeping the link's own path lets the scan say which it is, instead of the
    listing crashing (loop) or naming a target that is not there (dangling).
    """
    try:
        return str(path.resolve(strict=True))
    except (OSError, RuntimeError):
        return _own_path(path)


def _list_class(root: Path, class_dir: Path) -> tuple[list[str], list[str]]:
    """Every entry under one class folder, for the scan to judge; and the hidden ones skipped.

    Symlinked sub-folders are listed, not entered (a link to an ancestor would walk forever);
    a sub-folder that cannot be listed (permission denied, vanished) is listed itself, so the
    scan reports it instead of its images silently going missing.
    """
    entries: list[str] = []
    hidden: list[str] = []
    unlistable: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(class_dir, onerror=unlistable.append):
        rel = Path(dirpath).relative_to(root).parts
        links = {d for d in dirnames if os.path.islink(os.path.join(dirpath, d))}
        dirnames[:] = sorted(set(dirnames) - links)
        for name in sorted([*filenames, *links]):
            path = Path(dirpath) / name
            if _hidden(rel + (name,)):
                hidden.append(str(path))
                continue
            # A symlinked folder keeps its own name: the scan reports the link, not its target.
            entries.append(_own_path(path) if name in links else _listed_path(path))
    entries += [_listed_path(Path(exc.filename)) for exc in unlistable]
    return entries, hidden


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
        entries, skipped = _list_class(root, class_dir)
        rows += [(path, class_dir.name) for path in entries]
        hidden += skipped
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
            # Not checked here: a missing image, a fifo or a folder is quarantined by the scan.
            rows.append((_listed_path(base / "images" / f"{line}.jpg"), label, split))
    files = pd.DataFrame(rows, columns=["path", "label", "source_split"])
    for col in LISTING_COLUMNS[3:]:
        files[col] = float("nan")
    return SourceListing(files[LISTING_COLUMNS], hidden, base)
