"""Score a drop of new photos: one row per readable file, one line per unreadable file.

Used by the `batch_predictions` asset (one partition per drop); plain pandas and the predictor,
no Dagster. A file that does not decode is listed with its reason and never fails the drop.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from food_assets.ml.artifacts import atomic_path
from food_assets.ml.inference.predictor import Predictor, iter_image_files

#: Parquet columns of the predictions, in order (`top_k` is a list of {label, probability}).
COLUMNS = ("path", "label", "probability", "top_k", "model", "model_version")
ERROR_COLUMNS = ("path", "reason", "detail")
#: What a drop's folder name may be as a partition key (letters, digits, `._-`).
_DROP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ScoredDrop:
    """A drop's predictions (`COLUMNS`) and its unreadable files (`ERROR_COLUMNS`)."""

    predictions: pd.DataFrame
    unreadable: pd.DataFrame

    def low_confidence_share(self, threshold: float) -> float | None:
        """Share of predictions whose top-1 probability is under `threshold`; None if none."""
        if self.predictions.empty:
            return None
        return float((self.predictions["probability"] < threshold).mean())


def is_drop_name(name: str) -> bool:
    """Whether a folder name can be a drop (a partition key): letters, digits, `._-`."""
    return bool(_DROP_NAME.match(name))


def list_drops(source: str | os.PathLike[str]) -> list[str]:
    """The drops under a source folder: its sub-folders whose names can be partition keys,
    sorted (hidden folders and loose files are not drops). An absent folder has none."""
    root = Path(source)
    if not root.is_dir():
        return []
    return sorted(
        e.name
        for e in os.scandir(root)
        if e.is_dir(follow_symlinks=False) and _DROP_NAME.match(e.name)
    )


def score_drop(
    predictor: Predictor,
    folder: str | os.PathLike[str],
    *,
    model_version: str | None = None,
    top_k: int = 5,
    batch_size: int = 32,
) -> ScoredDrop:
    """Predict every image file under `folder` (recursively), paths relative to it."""
    folder = Path(folder)
    files = list(iter_image_files(folder))
    rows, bad = [], []
    for result in predictor.predict_paths(files, top_k=top_k, batch_size=batch_size):
        rel = Path(result.path).relative_to(folder).as_posix()
        if not result.ok:
            bad.append({"path": rel, "reason": result.error, "detail": result.detail})
            continue
        rows.append(
            {
                "path": rel,
                "label": result.top_k[0][0],
                "probability": result.top_k[0][1],
                "top_k": [{"label": c, "probability": p} for c, p in result.top_k],
                "model": predictor.model_name,
                "model_version": model_version,
            }
        )
    return ScoredDrop(
        predictions=pd.DataFrame(rows, columns=list(COLUMNS)),
        unreadable=pd.DataFrame(bad, columns=list(ERROR_COLUMNS)),
    )


def save_parquet(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write `frame` as Parquet atomically (no reader sees half a file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path
