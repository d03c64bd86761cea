"""The one way runs write files: to a temporary sibling, then an atomic rename.

No reader (a downstream asset, `food-assets predict`, the demo) ever sees half a file, and a
failed write (disk full, permission denied, a killed process) leaves the previous version in place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from food_assets.ml.errors import ArtifactWriteError

_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or point the artifact root elsewhere",
    errno.EACCES: "permission denied: make the folder writable or choose another artifact root",
    errno.EROFS: "the file system is read-only: choose another artifact root",
    errno.EDQUOT: "the disk quota is exceeded: free some space",
}


def _wrap(path: Path, exc: OSError) -> ArtifactWriteError:
    hint = _HINTS.get(exc.errno or -1, exc.strerror or str(exc))
    return ArtifactWriteError(
        f"Could not write {path}: {hint}. The previous version (if any) was left untouched."
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it over `path`.

    The caller writes a file (or a directory) at the yielded path by any means, for example
    `torch.onnx.export(..., f=tmp)`. On an exception the temporary is removed and `path` keeps
    its previous content.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _wrap(path, exc) from exc
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if tmp.is_dir():
            _replace_dir(tmp, path)
        else:
            _fsync_file(tmp)
            os.replace(tmp, path)
    except OSError as exc:
        raise _wrap(path, exc) from exc
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink(missing_ok=True)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _replace_dir(src: Path, dst: Path) -> None:
    # Directories cannot be swapped in one syscall; move the old one aside first so a failure
    # in between still leaves one complete version on disk. Two runs swapping the same folder
    # take turns (a file lock), so neither trips over the other's half-done swap.
    from filelock import FileLock

    with FileLock(str(dst.with_name(f".{dst.name}.lock")), timeout=600):
        _swap_dir(src, dst)


def _swap_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
        try:
            os.replace(src, dst)
        except OSError:
            os.replace(old, dst)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(path: str | os.PathLike[str], frame: Any) -> Path:
    """Write a pandas DataFrame as Parquet, atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)


def write_figure(path: str | os.PathLike[str], fig: Any, *, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def write_image(path: str | os.PathLike[str], image: Any, *, format: str = "PNG") -> Path:
    """Save a PIL image atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format=format)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a whole directory at a temporary path and swap it in when the block succeeds."""
    with atomic_path(path) as tmp:
        tmp.mkdir()
        yield tmp


def scratch_dir(prefix: str = "food_assets-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
