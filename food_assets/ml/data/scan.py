"""Scan a listing: decode every image fully, hash it, and quarantine what cannot be used."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from food_assets.ml.data.images import DEFAULT_MAX_PIXELS, ImageDecodeError, open_image

MANIFEST_COLUMNS = [
    "path",
    "label",
    "source_split",
    "width",
    "height",
    "mode",
    "format",
    "sha256",
    "box_x0",
    "box_y0",
    "box_x1",
    "box_y1",
]
QUARANTINE_COLUMNS = ["path", "label", "reason", "detail"]


@dataclass(frozen=True)
class ScanResult:
    manifest: pd.DataFrame  # MANIFEST_COLUMNS: only images that decoded cleanly
    quarantine: pd.DataFrame  # QUARANTINE_COLUMNS

    @property
    def quarantined_share(self) -> float:
        total = len(self.manifest) + len(self.quarantine)
        return len(self.quarantine) / total if total else 0.0


def _probe(path: str, max_pixels: int) -> dict:
    """Hash the bytes and decode fully; returns the manifest fields or a quarantine reason."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return {"reason": "unreadable", "detail": exc.strerror or str(exc)}
    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(path) as raw:  # header only: the original mode and format
            mode, fmt = raw.mode, raw.format or ""
    except Exception:
        mode, fmt = "", ""
    try:
        img = open_image(path, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return {"reason": exc.reason, "detail": exc.detail}
    return {"width": img.width, "height": img.height, "mode": mode, "format": fmt, "sha256": sha}


def scan_images(
    files: pd.DataFrame,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Decode every listed file; good ones go to the manifest, the rest to quarantine.

    Args:
        files: a source listing (`path`, `label`, `source_split`, box columns).
        max_pixels: larger images are quarantined as decompression bombs.
        workers: decoding threads (PIL releases the GIL while decoding); default: CPU count.
        progress: called as progress(done, total) every few hundred files.
    """
    paths = files["path"].tolist()
    workers = workers or min(8, os.cpu_count() or 1)
    results: list[dict] = []
    every = max(100, len(paths) // 20)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, res in enumerate(pool.map(lambda p: _probe(p, max_pixels), paths, chunksize=16)):
            results.append(res)
            if progress and ((i + 1) % every == 0 or i + 1 == len(paths)):
                progress(i + 1, len(paths))
    probed = pd.DataFrame(results, index=files.index)
    merged = pd.concat([files, probed], axis=1)
    bad = merged["reason"].notna() if "reason" in merged else pd.Series(False, index=merged.index)
    for col in QUARANTINE_COLUMNS + MANIFEST_COLUMNS:
        if col not in merged:
            merged[col] = None
    manifest = merged.loc[~bad, MANIFEST_COLUMNS].reset_index(drop=True)
    manifest["width"] = manifest["width"].astype("int64")
    manifest["height"] = manifest["height"].astype("int64")
    quarantine = merged.loc[bad, QUARANTINE_COLUMNS].reset_index(drop=True)
    return ScanResult(manifest, quarantine)
