"""The artifact root and its one local copy. No Dagster here: the IO manager, the resources, the
catalog, the CLI and the demo all go through `ArtifactStorage`.

The root is a local folder (the default: the data folder) or an fsspec URL (`s3://bucket/prefix`,
through universal-pathlib). Everything that needs a real file (ONNX Runtime, torch, PIL,
Lightning: the whole `food_assets.ml` layer) reads and writes under `ArtifactStorage.local`:

- a local root *is* its own local copy, so `publish` and `fetch` do nothing;
- a remote root gets a local cache (`<data>/artifact_cache/<scheme>/<bucket>/<prefix>`). An asset
  writes its folder there; `commit` uploads the folder and then writes the asset's record
  (`value.json`) last, so a reader never takes a half-uploaded folder for a finished one.
  `fetch` downloads an upstream asset's folder (the files its record lists) before a consumer
  reads it, and skips what the cache already holds at the same version.

The ml layer never learns which kind of root it is working for.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from food_assets import layout
from food_assets.ml.errors import FoodAssetsError

#: The data folder (sources, caches, the embedded MLflow store, the local copy of a remote root).
DATA_DIR_ENV = "FOOD_ASSETS_DATA_DIR"
DEFAULT_DATA_DIR = "data"
#: The artifact root: a folder or an fsspec URL such as s3://bucket/prefix (default: the data
#: folder).
ARTIFACT_ROOT_ENV = "FOOD_ASSETS_ARTIFACT_ROOT"

RECORD_FORMAT = "food_assets/asset-value@1"


class StoredValueError(FoodAssetsError):
    """An asset's stored value is missing or unreadable; the message says what to materialize."""


def default_data_dir() -> str:
    return os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


def default_artifact_root() -> str | None:
    """FOOD_ASSETS_ARTIFACT_ROOT, or None (the data folder)."""
    return os.environ.get(ARTIFACT_ROOT_ENV) or None


def is_remote(root: str | os.PathLike[str]) -> bool:
    """Whether `root` is an fsspec URL other than a plain local path or `file://`."""
    text = os.fspath(root)
    return "://" in text and not text.startswith("file://")


def _hidden(rel: str) -> bool:
    # Temporaries and locks of the atomic writers (`.x.tmp-*`, `.x.old-*`, `.x.lock`) and
    # anything else hidden never travel.
    return any(part.startswith(".") for part in rel.split("/"))


class ArtifactStorage:
    """One artifact root (local or remote) and the local folder the ml layer works in.

    Args:
        root: a folder, or an fsspec URL (`s3://bucket/prefix`, `gs://...`, `memory://...`).
        data_dir: the local data folder; a remote root's cache lives under it.
        storage_options: passed to the fsspec filesystem (`endpoint_url`, `key`, ...); most
            setups need none (credentials and endpoint come from `AWS_*` variables).
        cache_dir: the local copy of a remote root (default
            `<data_dir>/artifact_cache/<scheme>/<bucket>/<prefix>`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        data_dir: str | os.PathLike[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
        text = os.fspath(root)
        if is_remote(text):
            from upath import UPath

            self.url = text.rstrip("/")
            self.remote: Any = UPath(self.url, **dict(storage_options or {}))
            self.local = (
                Path(cache_dir).expanduser().resolve()
                if cache_dir
                else layout.remote_cache_root(self.data_dir, self.url)
            )
        else:
            self.local = Path(text.removeprefix("file://")).expanduser().resolve()
            self.url = str(self.local)
            self.remote = None

    @classmethod
    def from_env(
        cls,
        data_dir: str | os.PathLike[str] | None = None,
        artifact_root: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> ArtifactStorage:
        """The root FOOD_ASSETS_ARTIFACT_ROOT names (else the data folder), as the CLI and the
        demo find it; explicit arguments win over the environment."""
        data = Path(data_dir or default_data_dir()).expanduser()
        return cls(artifact_root or default_artifact_root() or data, data_dir=data, **kwargs)

    def __repr__(self) -> str:
        return f"ArtifactStorage({self.url!r}, local={str(self.local)!r})"

    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    # -- paths -------------------------------------------------------------------------------

    def local_dir(self, asset: str) -> Path:
        """The asset's folder in the local copy (not created)."""
        return layout.asset_dir(self.local, asset)

    def relative(self, path: str | os.PathLike[str]) -> str | None:
        """`path` relative to the local copy of the root (POSIX), or None if outside it."""
        try:
            return Path(path).expanduser().resolve().relative_to(self.local).as_posix()
        except ValueError:
            return None

    def resolve(self, rel: str) -> Path:
        """A root-relative path (as `relative` returns it) in this machine's local copy."""
        parts = rel.split("/")
        if not rel or rel.startswith("/") or ".." in parts:
            raise StoredValueError(f"stored path {rel!r} is not a path inside the artifact root")
        return self.local.joinpath(*parts)

    def location(self, path: str | os.PathLike[str]) -> str:
        """Where a local file lives in the root: its URL for a remote root, else the path."""
        rel = self.relative(path)
        if rel is None or not self.is_remote:
            return str(path)
        return f"{self.url}/{rel}"

    def _remote_path(self, asset: str, rel: str = "") -> str:
        base = layout.asset_dir(self.remote, asset).path
        return f"{base}/{rel}" if rel else base

    # -- records -----------------------------------------------------------------------------

    def record_exists(self, asset: str) -> bool:
        """Whether the asset has a committed value in the root."""
        if self.is_remote:
            fs = self.remote.fs
            path = self._remote_path(asset, layout.RECORD_FILE)
            fs.invalidate_cache(self._remote_path(asset))
            return bool(fs.exists(path))
        return layout.record_file(self.local, asset).is_file()

    def read_record(self, asset: str) -> dict[str, Any] | None:
        """The asset's record as committed in the root, or None when there is none."""
        text = self.read_text(asset, layout.RECORD_FILE)
        if text is None:
            return None
        return self._parse_record(asset, text, self.url)

    def _parse_record(self, asset: str, text: str, where: str) -> dict[str, Any]:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StoredValueError(
                f"{where}: the stored value of {asset} is not valid JSON ({exc.msg}); "
                f"materialize {asset} again"
            ) from None
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
            raise StoredValueError(
                f"{where}: the stored value of {asset} is not a food_assets record "
                f"({RECORD_FORMAT}); materialize {asset} again"
            )
        return record

    def read_text(self, asset: str, rel: str) -> str | None:
        """A small file of an asset straight from the root (no fetch), or None if absent."""
        if self.is_remote:
            try:
                return self.remote.fs.cat_file(self._remote_path(asset, rel)).decode("utf-8")
            except FileNotFoundError:
                return None
        path = layout.asset_dir(self.local, asset) / rel
        try:
            return path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def exists(self, asset: str, rel: str) -> bool:
        """Whether a file of the asset exists in the root (no fetch)."""
        if self.is_remote:
            record = self.read_record(asset)
            return bool(record) and rel in (record.get("files") or {})
        return (layout.asset_dir(self.local, asset) / rel).is_file()

    def list_assets(self) -> list[str]:
        """Names of the asset folders in the root, sorted."""
        if self.is_remote:
            fs = self.remote.fs
            base = layout.artifacts_dir(self.remote).path
            fs.invalidate_cache(base)
            try:
                entries = fs.ls(base, detail=True)
            except FileNotFoundError:
                return []
            names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries]
            return sorted(n for n in names if n and not n.startswith("."))
        artifacts = layout.artifacts_dir(self.local)
        if not artifacts.is_dir():
            return []
        return sorted(p.name for p in artifacts.iterdir() if p.is_dir() and p.name[0] != ".")

    def local_files(self, asset: str) -> dict[str, int]:
        """The asset folder's files in the local copy (relative path -> size), hidden ones and
        the record excluded."""
        folder = self.local_dir(asset)
        files: dict[str, int] = {}
        if not folder.is_dir():
            return files
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath, name)
                rel = path.relative_to(folder).as_posix()
                if rel == layout.RECORD_FILE or _hidden(rel) or path.is_symlink():
                    continue
                files[rel] = path.stat().st_size
        return files

    def commit(self, asset: str, value: Any) -> dict[str, Any]:
        """Record `value` (JSON-ready) as the asset's value and, for a remote root, publish the
        asset's local folder first: every file uploaded, files of an older version removed,
        then the record written last. Returns the record."""
        from food_assets.ml.artifacts import write_text

        record = {
            "format": RECORD_FORMAT,
            "asset": asset,
            "version": uuid.uuid4().hex,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": self.local_files(asset),
            "value": value,
        }
        text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
        if self.is_remote:
            self._upload(asset, record["files"])
            self.remote.fs.pipe_file(
                self._remote_path(asset, layout.RECORD_FILE), text.encode("utf-8")
            )
        # The local copy knows which version it holds, so a consumer on this machine fetches
        # nothing.
        write_text(layout.record_file(self.local, asset), text)
        return record

    def _upload(self, asset: str, files: dict[str, int]) -> None:
        fs = self.remote.fs
        base = self._remote_path(asset)
        folder = self.local_dir(asset)
        for rel in files:
            fs.put_file(str(folder / rel), f"{base}/{rel}")
        fs.invalidate_cache(base)
        try:
            existing = fs.find(base)
        except FileNotFoundError:
            existing = []
        stale = [
            p
            for p in existing
            if p.startswith(base + "/")
            and p[len(base) + 1 :] not in files
            and p[len(base) + 1 :] != layout.RECORD_FILE
        ]
        if stale:
            fs.rm(stale)

    def fetch(self, asset: str, *, prefix: str | None = None, missing_ok: bool = False) -> Path:
        """Make the asset's committed folder readable locally and return its local path.

        A local root: nothing to do. A remote root: download the files the record lists (only
        those under `prefix`, e.g. `bundle`, when given) that the cache does not already hold at
        this version; files of another version are dropped from the cache first.

        Raises:
            StoredValueError: no committed value (unless `missing_ok`, which returns the
                local path anyway).
        """
        folder = self.local_dir(asset)
        if not self.is_remote:
            return folder
        record = self.read_record(asset)
        if record is None:
            if missing_ok:
                return folder
            raise StoredValueError(
                f"{self.url} holds no value of {asset}: materialize {asset} first (or point "
                f"{ARTIFACT_ROOT_ENV} at the root it was written to)"
            )
        from filelock import FileLock

        from food_assets.ml.artifacts import atomic_path, write_text

        fs = self.remote.fs
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder.parent / f".{asset}.fetch.lock"), timeout=600):
            cached = self._local_record(asset)
            same = cached is not None and cached.get("version") == record["version"]
            if not same and folder.exists():
                shutil.rmtree(folder)
            for rel, size in sorted((record.get("files") or {}).items()):
                if prefix and rel != prefix and not rel.startswith(prefix.rstrip("/") + "/"):
                    continue
                target = self.resolve(f"{layout.ARTIFACTS}/{asset}/{rel}")
                if same and target.is_file() and target.stat().st_size == size:
                    continue
                with atomic_path(target) as tmp:
                    fs.get_file(self._remote_path(asset, rel), str(tmp))
            text = json.dumps(record, indent=2, sort_keys=True) + "\n"
            write_text(layout.record_file(self.local, asset), text)
        return folder

    def _local_record(self, asset: str) -> dict[str, Any] | None:
        path = layout.record_file(self.local, asset)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
