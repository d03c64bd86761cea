"""Scan a listing: decode every image, hash it, and quarantine what cannot be used.

Each file is read once and all of its compressed data is decoded, so a truncated or corrupt file
fails here and not later in a DataLoader. A JPEG is decoded at 1/8 scale (libjpeg's DCT scaling,
`Image.draft`): every entropy-coded byte is still read and checked, only the inverse DCT and the
colour conversion run on 1/64 of the pixels, which halves the scan's CPU time on Food-101's
512x384 photos (ADR 0015). Width and height come from the header, oriented by EXIF as
`open_image` orients the pixels. Files are probed by `workers` threads (PIL releases the GIL
while decoding) with a bounded number in flight, so memory does not grow with the listing
beyond its manifest rows.

A scan never stops on one entry: each listed path ends in the manifest or in quarantine with a
short `reason` tag and a human `detail`. The tags:

- `not a regular file`: a folder, fifo, socket or device (the detail says which, and whether a
  symlink led there). Such an entry is never opened: opening a fifo blocks until a writer
  comes, and opening a device can have side effects.
- `dangling symlink`: a symlink whose target does not exist.
- `symlink loop`: a symlink that leads back to itself.
- `missing`: listed, but not on disk when read (deleted mid-scan, or a Food-101 meta line
  with no image).
- `permission denied`: the OS refused to open it (or to list it, for a folder).
- `unreadable`: any other OS error while reading (an I/O error, say).
- From decoding (`images.open_image`): `empty file`, `not an image`, `truncated or corrupt`,
  `decompression bomb`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import os
import stat
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd
from PIL import ExifTags, Image

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
    "bytes",  # file size: with the path and the hash, what a data version covers (lineage.py)
    "box_x0",
    "box_y0",
    "box_x1",
    "box_y1",
]
QUARANTINE_COLUMNS = ["path", "label", "reason", "detail"]
#: A JPEG whose shorter side is at least twice this is decoded at a reduced scale (1/8 for any
#: photo of 64 px and up): enough to read every compressed byte, no more pixels than that.
SCAN_DRAFT_SIZE = 8
#: Files probed ahead of the one whose result is consumed, per worker thread.
_AHEAD_PER_WORKER = 32
#: EXIF orientations that swap width and height (rotations by 90 or 270 degrees).
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class ScanResult:
    manifest: pd.DataFrame  # MANIFEST_COLUMNS: only images that decoded cleanly
    quarantine: pd.DataFrame  # QUARANTINE_COLUMNS

    @property
    def quarantined_share(self) -> float:
        total = len(self.manifest) + len(self.quarantine)
        return len(self.quarantine) / total if total else 0.0


def _os_error(path: str, exc: OSError) -> dict[str, str]:
    """The quarantine reason for an OS error met while statting, opening or reading `path`."""
    if exc.errno == errno.ELOOP:
        return {"reason": "symlink loop", "detail": exc.strerror or str(exc)}
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        try:  # the entry itself is there: a symlink to nothing
            target = os.readlink(path)
        except OSError:  # no link (or it vanished too): the path itself is gone
            return {"reason": "missing", "detail": "not on disk when read"}
        return {"reason": "dangling symlink", "detail": f"points to {target}, which is not there"}
    if exc.errno in (errno.EACCES, errno.EPERM):
        return {"reason": "permission denied", "detail": exc.strerror or str(exc)}
    return {"reason": "unreadable", "detail": exc.strerror or str(exc)}


def _not_regular(path: str, mode: int) -> dict[str, str]:
    """The quarantine reason for a folder, fifo, socket or device at `path` (never opened)."""
    if stat.S_ISDIR(mode):
        try:  # a folder the listing could not walk into: say why
            with os.scandir(path):
                pass
        except OSError as exc:
            return _os_error(path, exc)
        kind = "a folder"
    elif stat.S_ISFIFO(mode):
        kind = "a fifo (named pipe)"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    else:
        kind = "not a file"
    via = ", reached through a symlink (not followed)" if os.path.islink(path) else ""
    return {"reason": "not a regular file", "detail": kind + via}


def _read_file(path: str) -> bytes | dict[str, str]:
    """The bytes of the regular file at `path`, or the quarantine reason why there are none.

    `stat` first, so a fifo or device is never opened; then O_NONBLOCK and `fstat` on the open
    file, so an entry swapped for a fifo between the two calls cannot block the scan either.
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return _not_regular(path, info.st_mode)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with open(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                return _not_regular(path, info.st_mode)
            return f.read()
    except OSError as exc:
        return _os_error(path, exc)


def _probe(path: str, max_pixels: int) -> dict:
    """Hash the bytes and decode them; returns the manifest fields or a quarantine reason."""
    data = _read_file(path)
    if isinstance(data, dict):
        return data
    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as raw:  # header only: mode, format, size
            mode, fmt, (width, height) = raw.mode, raw.format or "", raw.size
            if raw.getexif().get(ExifTags.Base.Orientation) in _SWAPPING_ORIENTATIONS:
                width, height = height, width
    except Exception:
        mode, fmt, width, height = "", "", 0, 0
    try:
        # Decode the bytes read above: reopening `path` could meet a different file by now.
        img = open_image(path, max_pixels=max_pixels, data=data, draft_size=SCAN_DRAFT_SIZE)
    except ImageDecodeError as exc:
        return {"reason": exc.reason, "detail": exc.detail}
    if fmt != "JPEG":  # not drafted: the decoded, oriented image has the true size
        width, height = img.width, img.height
    return {
        "width": width,
        "height": height,
        "mode": mode,
        "format": fmt,
        "sha256": sha,
        "bytes": len(data),
    }


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
        # A window of futures, not `pool.map`, which would submit the whole listing at once.
        queue = iter(paths)
        window = deque(
            pool.submit(_probe, p, max_pixels)
            for p in itertools.islice(queue, workers * _AHEAD_PER_WORKER)
        )
        while window:
            results.append(window.popleft().result())
            for p in itertools.islice(queue, 1):
                window.append(pool.submit(_probe, p, max_pixels))
            done = len(results)
            if progress and (done % every == 0 or done == len(paths)):
                progress(done, len(paths))
    probed = pd.DataFrame(results, index=files.index)
    merged = pd.concat([files, probed], axis=1)
    bad = merged["reason"].notna() if "reason" in merged else pd.Series(False, index=merged.index)
    for col in QUARANTINE_COLUMNS + MANIFEST_COLUMNS:
        if col not in merged:
            merged[col] = None
    manifest = merged.loc[~bad, MANIFEST_COLUMNS].reset_index(drop=True)
    manifest["width"] = manifest["width"].astype("int64")
    manifest["height"] = manifest["height"].astype("int64")
    manifest["bytes"] = manifest["bytes"].astype("int64")
    quarantine = merged.loc[bad, QUARANTINE_COLUMNS].reset_index(drop=True)
    return ScanResult(manifest, quarantine)
