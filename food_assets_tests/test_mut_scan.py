"""The scan's manifest and quarantine, pinned where mutation testing found them loose.

`make mutation` runs these once per mutant of `food_assets/ml/data/scan.py`; most use a handful
of tiny files, and the progress test replaces the decoder with a stub so 2,110 rows cost nothing.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from food_assets.ml.data import scan
from food_assets.ml.data.scan import MANIFEST_COLUMNS, QUARANTINE_COLUMNS, scan_images


def _files(paths, index=None) -> pd.DataFrame:
    """A listing without box columns, as `list_imagefolder` gives for a folder source."""
    return pd.DataFrame(
        {"path": [str(p) for p in paths], "label": "pho", "source_split": None}, index=index
    )


def _png(path: Path, size=(6, 4)) -> Path:
    Image.new("RGB", size, (10, 200, 30)).save(path, format="PNG")
    return path


# --- manifest and quarantine frames -----------------------------------------------------------


def test_frames_have_exactly_their_columns_and_types(tmp_path: Path) -> None:
    good = _png(tmp_path / "a.png", size=(7, 3))
    Image.new("L", (2, 5)).save(tmp_path / "b.jpg", format="JPEG")
    bad = tmp_path / "c.jpg"
    bad.write_text("not an image")
    result = scan_images(_files([good, tmp_path / "b.jpg", bad]))
    m, q = result.manifest, result.quarantine
    assert list(m.columns) == MANIFEST_COLUMNS and list(q.columns) == QUARANTINE_COLUMNS
    assert m["width"].dtype == np.int64 and m["height"].dtype == np.int64
    assert m[["width", "height"]].values.tolist() == [[7, 3], [2, 5]]
    # the file's size in bytes, an int64 column (a data version covers it, ADR 0023)
    assert m["bytes"].dtype == np.int64
    assert m["bytes"].tolist() == [good.stat().st_size, (tmp_path / "b.jpg").stat().st_size]
    # mode and format are the file's own (before the RGB conversion)
    assert m["mode"].tolist() == ["RGB", "L"] and m["format"].tolist() == ["PNG", "JPEG"]
    # a listing without boxes: the box columns are there, empty
    assert m[["box_x0", "box_y0", "box_x1", "box_y1"]].isna().all().all()
    assert m["box_x0"].tolist() == [None, None]
    assert q.to_dict("records") == [
        {
            "path": str(bad),
            "label": "pho",
            "reason": "not an image",
            "detail": "no image decoder recognises it",
        }
    ]
    assert m.index.tolist() == [0, 1] and q.index.tolist() == [0]


def test_rows_stay_with_their_listing_whatever_its_index(tmp_path: Path) -> None:
    a, b = _png(tmp_path / "a.png", (3, 3)), _png(tmp_path / "b.png", (5, 5))
    files = _files([a, b], index=[10, 42])
    files["label"] = ["x", "y"]
    m = scan_images(files).manifest
    assert m[["path", "label", "width"]].values.tolist() == [[str(a), "x", 3], [str(b), "y", 5]]


def test_all_bad_gives_an_empty_manifest_with_int_sizes(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    result = scan_images(_files([tmp_path / "a.png"]))
    assert result.manifest.empty and list(result.manifest.columns) == MANIFEST_COLUMNS
    assert result.manifest["width"].dtype == np.int64
    assert result.quarantine[["reason", "detail"]].values.tolist() == [["empty file", ""]]


# --- worker threads and progress --------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "cpus", "expected"), [(None, 12, 8), (None, 3, 3), (None, None, 1), (5, 12, 5)]
)
def test_worker_threads(tmp_path, monkeypatch, workers, cpus, expected) -> None:
    # default: the CPU count, at most 8; 1 when the count is unknown
    seen = []

    class Pool(scan.ThreadPoolExecutor):
        def __init__(self, max_workers=None):
            seen.append(max_workers)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(scan, "ThreadPoolExecutor", Pool)
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    scan_images(_files([_png(tmp_path / "a.png")]), workers=workers)
    assert seen == [expected]


def test_progress_every_twentieth_and_at_the_end(monkeypatch) -> None:
    # 2,110 rows: every max(100, 2110 // 20 = 105) rows, then once at the end
    monkeypatch.setattr(scan, "_probe", lambda p, max_pixels: {"reason": "stub", "detail": ""})
    calls = []
    scan_images(_files([f"{i}.jpg" for i in range(2110)]), progress=lambda *a: calls.append(a))
    assert calls == [(105 * k, 2110) for k in range(1, 21)] + [(2110, 2110)]
    calls.clear()
    # 250 rows: every 100 (the floor), then at the end
    scan_images(_files([f"{i}.jpg" for i in range(250)]), progress=lambda *a: calls.append(a))
    assert calls == [(100, 250), (200, 250), (250, 250)]


# --- why an entry was quarantined -------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (errno.ELOOP, "symlink loop"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "permission denied"),
        (errno.EIO, "unreadable"),
    ],
)
def test_os_errors_keep_the_os_message_as_detail(tmp_path, err: int, reason: str) -> None:
    assert scan._os_error(str(tmp_path / "x"), OSError(err, "the OS says no")) == {
        "reason": reason,
        "detail": "the OS says no",
    }
    # no message from the OS: the exception's text instead
    exc = OSError(err, "")
    assert scan._os_error(str(tmp_path / "x"), exc) == {"reason": reason, "detail": str(exc)}


def test_an_os_error_without_errno_is_unreadable_with_its_text(tmp_path) -> None:
    assert scan._os_error(str(tmp_path), OSError("disk on fire")) == {
        "reason": "unreadable",
        "detail": "disk on fire",
    }


def test_a_symlink_loop_detail_is_the_os_message(tmp_path) -> None:
    (tmp_path / "self.jpg").symlink_to("self.jpg")
    q = scan_images(_files([tmp_path / "self.jpg"])).quarantine
    assert q[["reason", "detail"]].values.tolist() == [["symlink loop", os.strerror(errno.ELOOP)]]


def test_a_device_is_never_opened(tmp_path) -> None:
    q = scan_images(_files(["/dev/null"])).quarantine
    assert q[["reason", "detail"]].values.tolist() == [["not a regular file", "a device"]]
    assert scan._not_regular(str(tmp_path), stat.S_IFBLK) == {
        "reason": "not a regular file",
        "detail": "a device",
    }


def test_an_unknown_file_type_is_not_a_file(tmp_path) -> None:
    # none of folder, fifo, socket or device (a Solaris door, say)
    assert scan._not_regular(str(tmp_path / "x"), 0) == {
        "reason": "not a regular file",
        "detail": "not a file",
    }


def test_a_folder_that_vanishes_before_it_is_listed_is_missing(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "gone.jpg"
    folder.mkdir()
    real = os.scandir

    def scandir(p=".", *a, **k):
        if os.fspath(p) == str(folder):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(folder))
        return real(p, *a, **k)

    monkeypatch.setattr(os, "scandir", scandir)
    q = scan_images(_files([folder])).quarantine
    assert q[["reason", "detail"]].values.tolist() == [["missing", "not on disk when read"]]


def test_files_are_opened_read_only_non_blocking_and_never_as_a_terminal(tmp_path, monkeypatch):
    # O_NONBLOCK: a file swapped for a fifo after its stat cannot block the open; O_NOCTTY: one
    # swapped for a terminal cannot become the process's controlling terminal. Neither race can
    # be staged reliably in a test, so the flags themselves are checked.
    good = _png(tmp_path / "a.png")
    flags = []
    real_open = os.open
    monkeypatch.setattr(
        os, "open", lambda p, f, *a, **k: flags.append(f) or real_open(p, f, *a, **k)
    )
    assert len(scan_images(_files([good])).manifest) == 1
    assert flags == [os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY]
