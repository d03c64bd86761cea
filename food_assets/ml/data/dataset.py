"""A torch Dataset over a split manifest (the Parquet written by the `food_splits` asset)."""

from __future__ import annotations

import pandas as pd
import torch
from torch.utils.data import Dataset

from food_assets.ml.data.transforms import ImagePipeline, Preprocess


class ManifestDataset(Dataset):
    """Rows of a manifest (`path`, `label_idx`) -> (image tensor, label index).

    Manifests only list images that decoded cleanly during the scan, so a failure here means the
    file changed on disk since; it raises with the path rather than skipping silently.
    """

    def __init__(self, frame: pd.DataFrame, preprocess: Preprocess, *, train: bool) -> None:
        missing = {"path", "label_idx"} - set(frame.columns)
        if missing:
            raise ValueError(f"manifest lacks columns {sorted(missing)}")
        self.paths = frame["path"].astype(str).tolist()
        self.labels = frame["label_idx"].astype(int).tolist()
        self.pipeline = ImagePipeline(preprocess, train=train)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.pipeline(self.paths[i]), self.labels[i]
