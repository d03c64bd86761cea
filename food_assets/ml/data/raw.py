"""`collect_raw_images`: list a source, decode every file, write the manifest and quarantine.

This is the one function the `food_images_raw` asset calls. Where the two Parquet files go is
the caller's business (the wiring's `layout`); this module only writes where it is told.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from food_assets.ml import artifacts
from food_assets.ml.data.images import DEFAULT_MAX_PIXELS
from food_assets.ml.data.sample import SampleSpec
from food_assets.ml.data.scan import ScanResult, scan_images
from food_assets.ml.data.sources import (
    SourceKind,
    SourceListing,
    list_food101,
    list_imagefolder,
    list_sample,
)
from food_assets.ml.errors import DataSourceError


@dataclass(frozen=True)
class RawScan:
    """What `collect_raw_images` listed, decoded and wrote.

    Attributes:
        listing: the source's candidate files and the hidden ones passed over.
        scan: the decoded manifest and the quarantine (with each file's reason).
        manifest_path: where the manifest was written.
        quarantine_path: where the quarantine was written.
    """

    listing: SourceListing
    scan: ScanResult
    manifest_path: Path
    quarantine_path: Path


def list_source(
    source: SourceKind,
    root: str | Path | None,
    *,
    sources_dir: Path,
    sample: SampleSpec,
    download: bool = False,
) -> SourceListing:
    """List one source's files; `root` None means `sources_dir/<source>` (sample, food101).

    Raises:
        DataSourceError: `imagefolder` without a root, or a source that cannot be listed.
    """
    if source == "sample":
        return list_sample(Path(root) if root else sources_dir / "sample", sample)
    if source == "imagefolder":
        if not root:
            raise DataSourceError("source imagefolder needs `root`: a root/<class>/<image> tree")
        return list_imagefolder(root)
    return list_food101(Path(root) if root else sources_dir / "food101", download=download)


def collect_raw_images(
    source: SourceKind,
    root: str | Path | None,
    *,
    sources_dir: Path,
    manifest_path: Path,
    quarantine_path: Path,
    sample: SampleSpec | None = None,
    download: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> RawScan:
    """List `source`, fully decode every file, and write the manifest and the quarantine.

    Args:
        source: `sample`, `imagefolder` or `food101` (see `food_assets.ml.data.sources`).
        root: the source's folder; None takes `sources_dir/<source>` (not for imagefolder).
        sources_dir: where sources live when `root` is None.
        manifest_path: Parquet file for the images that decoded cleanly (written atomically).
        quarantine_path: Parquet file for the others, with their reason.
        sample: the sample set's parameters (source `sample` only); default `SampleSpec()`.
        download: food101 only: download when missing.
        max_pixels: larger images are quarantined as decompression bombs.
        workers: decoding threads; default: CPU count.
        log: receives progress lines ("scanning ...", "decoded done/total files").

    Raises:
        DataSourceError: the source cannot be listed, or none of its files is a usable image.
    """
    emit = log or (lambda _msg: None)
    listing = list_source(
        source, root, sources_dir=sources_dir, sample=sample or SampleSpec(), download=download
    )
    emit(f"scanning {len(listing.files)} files under {listing.root}")
    scan = scan_images(
        listing.files,
        max_pixels=max_pixels,
        workers=workers,
        progress=lambda done, total: emit(f"decoded {done}/{total} files"),
    )
    if scan.manifest.empty:
        raise DataSourceError(
            f"none of the {len(listing.files)} files under {listing.root} is a usable image; "
            "see the quarantine list in the logs"
        )
    return RawScan(
        listing=listing,
        scan=scan,
        manifest_path=artifacts.write_parquet(manifest_path, scan.manifest),
        quarantine_path=artifacts.write_parquet(quarantine_path, scan.quarantine),
    )
