"""A torch Dataset over a split manifest (the Parquet written by the `food_splits` asset)."""

from __future__ import annotations

import pandas as pd
import torch
from torch.utils.data import Dataset

from food_assets.ml.data.images import DECODE_CACHE, DecodeCache
from food_assets.ml.data.transforms import Augment, ImagePipeline, Preprocess


class ManifestDataset(Dataset):
    """Rows of a manifest (`path`, `label_idx`) -> (image tensor, label index).

    Manifests only list images that decoded cleanly during the scan, so a failure here means the
    file changed on disk since; it raises with the path rather than skipping silently.

    Decoded images go into `cache` (the process-wide `DECODE_CACHE` by default; None: off) when
    the whole dataset fits in what is left of its budget, judged from the manifest's `width`
    and `height` (8-bit RGB); a dataset that does not fit (Food-101) decodes every time, as a
    partly cached epoch would gain little and hold memory in every loader worker.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        preprocess: Preprocess,
        *,
        train: bool,
        augment: Augment | None = None,
        cache: DecodeCache | None = DECODE_CACHE,
    ) -> None:
        missing = {"path", "label_idx"} - set(frame.columns)
        if missing:
            raise ValueError(f"manifest lacks columns {sorted(missing)}")
        self.paths = frame["path"].astype(str).tolist()
        self.labels = frame["label_idx"].astype(int).tolist()
        fits = cache is not None and cache.fits(decoded_bytes(frame))
        self.pipeline = ImagePipeline(
            preprocess, train=train, augment=augment, cache=cache if fits else None
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.pipeline(self.paths[i]), self.labels[i]


def decoded_bytes(frame: pd.DataFrame) -> int:
    """Bytes of the manifest's images decoded to 8-bit RGB (0 without `width`/`height`: the
    cache's budget still bounds it)."""
    if not {"width", "height"} <= set(frame.columns):
        return 0
    return int((frame["width"].astype("int64") * frame["height"].astype("int64")).sum() * 3)
