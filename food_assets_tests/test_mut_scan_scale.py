"""The scan at Food-101's size: JPEGs decoded at 1/8 scale with their header's size, truncated
files still caught, a bounded number of files in flight, and `scan_workers` reaching the pool.

In `make mutation`'s test selection (pyproject.toml): these are what kill the mutants of the
scan's reduced decode and its window of futures (ADR 0015).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, JpegImagePlugin

from benchmarks.synthetic_food101 import make_food101_like, render_food101_like_image
from food_assets.ml.data import scan
from food_assets.ml.data.images import open_image
from food_assets.ml.data.scan import scan_images


def _jpeg(path: Path, size: tuple[int, int], seed: int = 0, **save: object) -> bytes:
    img = render_food101_like_image(seed % 101, seed, size=size)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **save)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_scan_decodes_jpegs_at_reduced_scale_with_their_header_size(tmp_path, monkeypatch) -> None:
    """Food-101-sized JPEGs are decoded at 1/8 scale, keep their true (EXIF-oriented) size in
    the manifest, and a truncated or cut JPEG is still quarantined.

    Breakage caught: the manifest taking the decoded (1/8) size (64x48 instead of 512x384); the
    EXIF swap dropped (the rotated file listed as stored, 512x384); the scan decoding at full
    size again (no draft call)."""
    data = _jpeg(tmp_path / "land.jpg", (512, 384), seed=1)
    _jpeg(tmp_path / "port.jpg", (384, 512), seed=2)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 512x384, shown 384x512
    _jpeg(tmp_path / "rot.jpg", (512, 384), seed=3, exif=exif)
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "tail.jpg").write_bytes(data[:-10])
    drafts: list[tuple] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        drafts.append(size)
        return real_draft(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    names = ["land", "port", "rot", "cut", "tail"]
    files = pd.DataFrame({"path": [str(tmp_path / f"{n}.jpg") for n in names], "label": "pho"})
    result = scan_images(files, workers=1)
    sizes = {Path(r.path).stem: (r.width, r.height) for r in result.manifest.itertuples()}
    assert sizes == {"land": (512, 384), "port": (384, 512), "rot": (384, 512)}
    reasons = {Path(r.path).stem: r.reason for r in result.quarantine.itertuples()}
    assert reasons == {"cut": "truncated or corrupt", "tail": "truncated or corrupt"}
    assert len(drafts) == len(names) and set(drafts) == {(scan.SCAN_DRAFT_SIZE,) * 2}


def test_scan_keeps_a_bounded_number_of_files_in_flight(monkeypatch) -> None:
    """However long the listing, at most `workers x 32` files are probed ahead of the result
    being consumed, so memory does not grow with the listing.

    Breakage caught: `pool.map` over the whole listing (every file submitted at once; the
    stub probes race thousands ahead of the consumer); the files submitted as the window
    refills probed with another path or without the pixel limit."""
    started, limits = [], set()

    def probe(path: str, max_pixels: int) -> dict:
        started.append(path)
        limits.add(max_pixels)
        return {"reason": "stub", "detail": ""}

    monkeypatch.setattr(scan, "_probe", probe)
    ahead = []
    n = 5000
    paths = [f"{i}.jpg" for i in range(n)]
    result = scan_images(
        pd.DataFrame({"path": paths, "label": "x"}),
        workers=2,
        max_pixels=1234,
        progress=lambda done, total: ahead.append(len(started) - done),
    )
    assert len(result.quarantine) == n and sorted(started) == sorted(paths)
    assert limits == {1234}
    assert max(ahead) <= 2 * scan._AHEAD_PER_WORKER


def test_scan_workers_setting_reaches_the_thread_pool(tmp_path, monkeypatch) -> None:
    """`scan_workers` (the asset's config) is the scan's thread count.

    Breakage caught: `collect_raw_images` not passing `workers` on to the scan's pool."""
    from food_assets.ml.data.raw import collect_raw_images

    seen = []

    class Pool(scan.ThreadPoolExecutor):
        def __init__(self, max_workers=None):
            seen.append(max_workers)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(scan, "ThreadPoolExecutor", Pool)
    make_food101_like(tmp_path, classes=2, per_class=4, image_size=(64, 48), workers=1)
    raw = collect_raw_images(
        "food101",
        tmp_path,
        sources_dir=tmp_path / "sources",
        manifest_path=tmp_path / "m.parquet",
        quarantine_path=tmp_path / "q.parquet",
        workers=3,
    )
    assert seen == [3] and len(raw.scan.manifest) == 8


@pytest.mark.parametrize("orientation", range(1, 9))
def test_scan_size_is_the_decoded_images_size_for_every_exif_orientation(
    tmp_path, orientation: int
) -> None:
    """The manifest's size (from the header, as the scan decodes at 1/8 scale) is the size of the
    image `open_image` returns at full scale, for each of the eight EXIF orientations.

    Breakage caught: a swapping orientation (5, 6, 7, 8) left out of the set, or a non-swapping
    one (1-4) put in."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    _jpeg(path, (160, 96), seed=orientation, exif=exif)
    result = scan_images(pd.DataFrame({"path": [str(path)], "label": "pho"}), workers=1)
    row = result.manifest.iloc[0]
    assert (row.width, row.height) == open_image(path).size
    assert (row.width, row.height) == ((96, 160) if orientation >= 5 else (160, 96))
