"""Where drops of new photos arrive for `batch_predictions`: a folder, or an object-store prefix
(an fsspec URL such as `s3://bucket/incoming`), one sub-folder (sub-prefix) per drop.

A remote drop is copied once into `<data dir>/cache/drops/` (files already there with the same
size are kept), so the predictor reads local files as everywhere else. No Dagster here.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from food_assets import layout
from food_assets.storage import default_data_dir

DROPS_ENV = "FOOD_ASSETS_DROPS_DIR"


def default_source(data_dir: str | os.PathLike[str] | None = None) -> str:
    """FOOD_ASSETS_DROPS_DIR (a folder or a URL), else `<data dir>/drops`."""
    return os.environ.get(DROPS_ENV) or str(Path(data_dir or default_data_dir()) / "drops")


def is_remote(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def list_drops(source: str) -> list[str]:
    """The drop names under `source` (sub-folders or sub-prefixes with partition-safe names)."""
    from food_assets.ml.inference.batch import is_drop_name
    from food_assets.ml.inference.batch import list_drops as list_local

    if not is_remote(source):
        return list_local(source.removeprefix("file://"))
    from upath import UPath

    root = UPath(source)
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return []
    return sorted(p.name for p in entries if p.is_dir() and is_drop_name(p.name))


def local_drop(source: str, drop: str, data_dir: str | os.PathLike[str]) -> Path:
    """The drop as a local folder: itself for a folder source, else a synced local copy."""
    if not is_remote(source):
        return Path(source.removeprefix("file://")) / drop
    from upath import UPath

    remote = UPath(source) / drop
    key = hashlib.sha256(source.encode()).hexdigest()[:12]
    local = layout.cache_dir(Path(data_dir), "drops") / key / drop
    if not remote.is_dir():
        return local / "__missing__"  # the caller reports a missing drop
    for path in remote.rglob("*"):
        if not path.is_file():
            continue
        target = local / path.relative_to(remote).as_posix()
        size = path.stat().st_size
        if target.is_file() and target.stat().st_size == size:
            continue
        from food_assets.ml.artifacts import atomic_path

        with atomic_path(target) as tmp:
            tmp.write_bytes(path.read_bytes())
    return local
