"""A scan never crashes (or hangs) on an odd file-system entry: each one is quarantined with its
reason and the rest of the scan completes.

Tests run as root here, where `chmod 000` does not stop reads: permission errors are made by
patching `os.open` / `os.scandir` for one path, which is where the OS would refuse.
Every test carries a timeout, so a scan that opens a fifo fails the run instead of hanging it.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from food_assets.defs.assets import data
from food_assets.ml.data import scan
from food_assets.ml.data.scan import scan_images
from food_assets.ml.data.sources import list_food101, list_imagefolder
from food_assets_tests.images import solid
from food_assets_tests.test_data import make_fake_food101

# A scan that opens a fifo blocks in a worker thread; the default `signal` timeout would fire,
# then hang anyway in the thread pool's shutdown. `thread` dumps the stacks and ends the run.
pytestmark = pytest.mark.timeout(60, method="thread")


def _odd_tree(root: Path) -> dict[str, str]:
    """`root/pho` holds good images and every awkward entry; returns name -> expected reason
    ("ok": in the manifest). `root/ramen` holds good images only."""
    pho = root / "pho"
    expected = {}
    for i in range(3):
        solid(pho / f"good{i}.jpg", colour=(20 * i, 90, 30))
        solid(root / "ramen" / f"r{i}.jpg", colour=(90, 20 * i, 30))
        expected[f"good{i}.jpg"] = "ok"
    (pho / "self.jpg").symlink_to("self.jpg")
    (pho / "ping.jpg").symlink_to("pong.jpg")
    (pho / "pong.jpg").symlink_to("ping.jpg")
    expected |= {"self.jpg": "symlink loop", "ping.jpg": "symlink loop", "pong.jpg": "symlink loop"}
    (pho / "dangling.jpg").symlink_to("nowhere.jpg")
    expected["dangling.jpg"] = "dangling symlink"
    os.mkfifo(pho / "fifo.jpg")
    expected["fifo.jpg"] = "not a regular file"
    # A folder named like an image is an ordinary sub-folder: walked into, its image used.
    solid(pho / "folder.jpg" / "inside.jpg")
    expected["inside.jpg"] = "ok"
    # A symlink to an ancestor folder: never entered (it would loop), reported.
    (pho / "up").symlink_to("..")
    expected["up"] = "not a regular file"
    # A symlink to a valid image elsewhere still works; the manifest names its target.
    solid(root.parent / "elsewhere" / "target.jpg")
    (pho / "linked.jpg").symlink_to(root.parent / "elsewhere" / "target.jpg")
    expected["target.jpg"] = "ok"
    return expected


def _reasons(quarantine: pd.DataFrame) -> dict[str, str]:
    return dict(zip(quarantine.path.map(lambda p: Path(p).name), quarantine.reason, strict=True))


def _names(manifest: pd.DataFrame) -> set[str]:
    return set(manifest.path.map(lambda p: Path(p).name))


def test_every_odd_entry_is_quarantined_with_its_reason(tmp_path):
    """Catches: the listing crashing on a symlink loop (`resolve` raises RuntimeError); the scan
    hanging on a fifo (timeout); a dangling symlink listed under its target's name or called
    something else; a symlinked folder silently dropped or followed; a folder named `x.jpg`
    not walked into; a symlink to a good image no longer used."""
    expected = _odd_tree(tmp_path / "tree")
    result = scan_images(list_imagefolder(tmp_path / "tree").files)
    assert _reasons(result.quarantine) == {n: r for n, r in expected.items() if r != "ok"}
    assert _names(result.manifest) == {n for n, r in expected.items() if r == "ok"} | {
        "r0.jpg",
        "r1.jpg",
        "r2.jpg",
    }
    details = dict(zip(_reasons(result.quarantine), result.quarantine.detail, strict=True))
    assert details["fifo.jpg"] == "a fifo (named pipe)"
    assert details["up"] == "a folder, reached through a symlink (not followed)"
    assert details["dangling.jpg"] == "points to nowhere.jpg, which is not there"


def test_fifos_sockets_and_folders_are_never_opened(tmp_path, monkeypatch):
    """Catches: dropping the `stat` check before `open` (a fifo would then be opened; opening a
    device can have side effects), even while the O_NONBLOCK guard keeps the scan from hanging."""
    os.mkfifo(tmp_path / "fifo.jpg")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock.jpg"))
        (tmp_path / "dir.jpg").mkdir()
        solid(tmp_path / "good.jpg")
        opened: list[str] = []
        real_open = os.open
        monkeypatch.setattr(
            os, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k)
        )
        paths = [str(tmp_path / n) for n in ("fifo.jpg", "sock.jpg", "dir.jpg", "good.jpg")]
        result = scan_images(pd.DataFrame({"path": paths, "label": "x", "source_split": None}))
    assert opened == [str(tmp_path / "good.jpg")]
    assert dict(zip(_reasons(result.quarantine), result.quarantine.detail, strict=True)) == {
        "fifo.jpg": "a fifo (named pipe)",
        "sock.jpg": "a socket",
        "dir.jpg": "a folder",
    }


def test_an_entry_swapped_for_a_fifo_after_its_stat_does_not_hang(tmp_path, monkeypatch):
    """Between the `stat` and the `open` a regular file can be replaced by a fifo. `stat` is
    made to lie for one path to stage that race. Catches: opening without O_NONBLOCK or not
    checking `fstat` on the open file (the scan then blocks until the timeout)."""
    fifo = tmp_path / "swapped.jpg"
    os.mkfifo(fifo)
    decoy = solid(tmp_path / "decoy.jpg")
    real_stat = os.stat
    monkeypatch.setattr(
        os, "stat", lambda p, *a, **k: real_stat(decoy if str(p) == str(fifo) else p, *a, **k)
    )
    result = scan_images(pd.DataFrame({"path": [str(fifo)], "label": "x", "source_split": None}))
    assert result.quarantine.reason.tolist() == ["not a regular file"]


def _failing_open(path: Path, err: int) -> Callable:
    real_open = os.open

    def fake(p, *a, **k):
        if str(p) == str(path):
            raise OSError(err, os.strerror(err), str(p))
        return real_open(p, *a, **k)

    return fake


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "permission denied"),
        (errno.EIO, "unreadable"),
        (errno.ENOENT, "missing"),
    ],
)
def test_a_file_the_os_refuses_mid_scan_is_quarantined(tmp_path, monkeypatch, err, reason):
    """The file is listed and its `stat` succeeds; then `os.open` fails for it alone (a chmod
    000 or a delete mid-scan; patched because root ignores chmod). Catches: the OS error
    escaping the scan, or the errno mapped to the wrong tag."""
    for i in range(3):
        solid(tmp_path / "pho" / f"{i}.jpg", colour=(i, 2, 3))
    listing = list_imagefolder(tmp_path)
    monkeypatch.setattr(os, "open", _failing_open(tmp_path / "pho" / "1.jpg", err))
    result = scan_images(listing.files)
    assert _reasons(result.quarantine) == {"1.jpg": reason}
    assert _names(result.manifest) == {"0.jpg", "2.jpg"}


def test_a_file_deleted_after_listing_is_missing(tmp_path):
    """Catches: a file that vanishes between listing and scan crashing the scan, or being
    called a dangling symlink (it is no link at all)."""
    for i in range(3):
        solid(tmp_path / "pho" / f"{i}.jpg", colour=(i, 2, 3))
    listing = list_imagefolder(tmp_path)
    (tmp_path / "pho" / "0.jpg").unlink()
    result = scan_images(listing.files)
    assert _reasons(result.quarantine) == {"0.jpg": "missing"}
    assert result.quarantine.detail.tolist() == ["not on disk when read"]


def test_a_file_deleted_right_after_it_was_read_is_judged_on_its_bytes(tmp_path, monkeypatch):
    """Each file is opened once: the decode works on the bytes already read. Catches: the
    decoder reopening the path (it would then report a good image as unreadable)."""
    solid(tmp_path / "pho" / "a.jpg")
    real_read = scan._read_file

    def read_then_delete(path: str):
        got = real_read(path)
        os.unlink(path)
        return got

    monkeypatch.setattr(scan, "_read_file", read_then_delete)
    result = scan_images(list_imagefolder(tmp_path).files)
    assert result.quarantine.empty and _names(result.manifest) == {"a.jpg"}


def test_a_sub_folder_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
    """`os.scandir` is made to refuse one sub-folder (root ignores chmod). Catches: `os.walk`
    silently skipping it (its default), so its images would vanish without a word."""
    solid(tmp_path / "pho" / "a.jpg")
    solid(tmp_path / "pho" / "locked" / "b.jpg")
    locked = str(tmp_path / "pho" / "locked")
    real_scandir = os.scandir

    def fake(p=".", *a, **k):
        if os.fspath(p) == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), locked)
        return real_scandir(p, *a, **k)

    monkeypatch.setattr(os, "scandir", fake)
    result = scan_images(list_imagefolder(tmp_path).files)
    assert _reasons(result.quarantine) == {"locked": "permission denied"}
    assert _names(result.manifest) == {"a.jpg"}


def test_food101_lines_naming_odd_entries_are_quarantined(tmp_path):
    """meta/train.txt names an image that is missing, a fifo, a folder or a symlink loop.
    Catches: the listing crashing on the loop, or the scan hanging on the fifo (timeout)."""
    base = make_fake_food101(tmp_path, classes=("pho",), n_train=6, n_test=1)
    images = base / "images" / "pho"
    (images / "000000.jpg").unlink()
    (images / "000001.jpg").unlink()
    os.mkfifo(images / "000001.jpg")
    (images / "000002.jpg").unlink()
    (images / "000002.jpg").mkdir()
    (images / "000003.jpg").unlink()
    (images / "000003.jpg").symlink_to("000003.jpg")
    result = scan_images(list_food101(tmp_path).files)
    assert _reasons(result.quarantine) == {
        "000000.jpg": "missing",
        "000001.jpg": "not a regular file",
        "000002.jpg": "not a regular file",
        "000003.jpg": "symlink loop",
    }
    assert len(result.manifest) == 3


def test_food_images_raw_materializes_past_odd_entries(tmp_path, resources):
    """A real Dagster materialization of `food_images_raw` (source: imagefolder) over a class
    folder holding a symlink loop, a dangling symlink, a fifo, a folder named like an image and
    a symlink to an ancestor. Catches: the asset failing with a traceback (as it did on one
    symlink loop), hanging on the fifo (timeout), or the odd entries missing from the
    quarantine Parquet / the good images missing from the manifest."""
    expected = _odd_tree(tmp_path / "tree")
    config = {
        "food_images_raw": {"config": {"source": "imagefolder", "root": str(tmp_path / "tree")}}
    }
    result = dg.materialize([data.food_images_raw], resources=resources, run_config={"ops": config})
    assert result.success
    raw = result.output_for_node("food_images_raw")
    assert _reasons(pd.read_parquet(raw.quarantine_path)) == {
        n: r for n, r in expected.items() if r != "ok"
    }
    assert {n for n, r in expected.items() if r == "ok"} <= _names(raw.manifest())
    meta = result.asset_materializations_for_node("food_images_raw")[0].metadata
    assert meta["num_quarantined"].value == sum(r != "ok" for r in expected.values())
    assert "symlink loop" in meta["quarantine"].value
