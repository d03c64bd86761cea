"""Content digests of image manifests: one identity for a set of images, wherever it is used.

- `raw_manifest_digest`: the scanned images (relative path, size, content hash, label, official
  split). The same images give the same digest wherever the tree lives; one changed, added,
  removed or relabelled image gives another. `food_images_raw` reports it as its data version.
- `splits_digest`: the splits' identity from their inputs and config (the raw digest, the
  fractions, the seed), `food_splits`'s data version.
- `split_rows_digest`: the rows of a split manifest (all splits, or one) with its class map;
  `SplitManifest.digest()` is it for a manifest (training's resume key, the CLIP feature-cache
  key), and the MLflow datasets a model run logs carry it per split.

Every digest is sha256 over a canonical text of the rows (sorted, fixed columns), never the
Parquet bytes: rewriting the same rows keeps the digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

#: What identifies one scanned image. `bytes` is absent from manifests written before it existed
#: (and from hand-made test manifests): the digest then covers the columns that are there.
RAW_COLUMNS = ("path", "bytes", "sha256", "label", "source_split")
#: What identifies one row of a split manifest.
SPLIT_COLUMNS = ("split", "path", "sha256", "label_idx")
#: Bumped when what a digest covers changes, so an old version is never mistaken for a new one.
DIGEST_VERSION = 1


def frame_digest(frame: pd.DataFrame, columns: Iterable[str], *, header: Any = None) -> str:
    """sha256 hex of `header` (as JSON) and the rows of `frame` over `columns` (those present),
    sorted by those columns: independent of row order and of the other columns."""
    cols = [c for c in columns if c in frame.columns]
    rows = frame[cols].sort_values(cols, kind="stable") if cols else frame.iloc[:, :0]
    h = hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode())
    h.update(json.dumps(cols).encode())
    h.update(rows.to_csv(index=False).encode())
    return h.hexdigest()


def _relative_paths(paths: pd.Series, root: Path) -> pd.Series:
    root_str = str(Path(root))
    prefix = root_str.rstrip("/") + "/"
    # Plain prefix removal (no resolve, no I/O): the scan lists paths under `root` as given.
    return paths.astype(str).map(lambda p: p[len(prefix) :] if p.startswith(prefix) else p)


def raw_manifest_digest(manifest: pd.DataFrame, root: str | Path | None = None) -> str:
    """The digest of a scanned manifest (`RAW_COLUMNS`), paths taken relative to `root` so that
    the same tree copied or generated elsewhere keeps its digest."""
    frame = manifest
    if root is not None and "path" in manifest.columns:
        frame = manifest.assign(path=_relative_paths(manifest["path"], Path(root)))
    return frame_digest(frame, RAW_COLUMNS, header={"kind": "raw", "v": DIGEST_VERSION})


def splits_digest(raw_digest: str, config: Mapping[str, Any]) -> str:
    """The splits' identity from their inputs: the raw manifest's digest and the split config
    (fractions, seed). `make_splits` is deterministic in them, so the same inputs give the same
    splits; its code is covered by the asset's code version, not here."""
    record = {"kind": "splits", "v": DIGEST_VERSION, "raw": raw_digest, "config": dict(config)}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def split_rows_digest(frame: pd.DataFrame, class_names: Iterable[str]) -> str:
    """The digest of some rows of a split manifest (one split, or all) with the class map."""
    return frame_digest(frame, SPLIT_COLUMNS, header=list(class_names))


def short(digest: str, n: int = 16) -> str:
    """A digest shortened for display and data versions (64 bits: collisions are not a concern
    for one project's datasets)."""
    return digest[:n]


__all__ = [
    "RAW_COLUMNS",
    "SPLIT_COLUMNS",
    "frame_digest",
    "raw_manifest_digest",
    "short",
    "split_rows_digest",
    "splits_digest",
]
