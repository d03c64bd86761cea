"""LightningDataModule over a split manifest: train transforms for train, eval ones for val."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from food_assets.ml.data.dataset import ManifestDataset
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import DataSourceError


def check_splits(splits: SplitManifest) -> dict[str, int]:
    """Fail early, before any file is written, if the manifest cannot be trained on.

    Returns:
        Number of images per split.
    """
    if not splits.path.is_file():
        raise DataSourceError(
            f"split manifest {splits.path} does not exist: materialize food_splits first"
        )
    if len(splits.class_names) < 2:
        raise DataSourceError(f"training needs at least 2 classes (got {len(splits.class_names)})")
    frame = splits.frame()
    for split in ("train", "val"):
        if not (frame["split"] == split).any():
            raise DataSourceError(
                f"the manifest {splits.path} has no {split!r} images: re-run food_splits with "
                "a non-zero val fraction and enough images per class"
            )
    labels = frame["label_idx"]
    if labels.min() < 0 or labels.max() >= len(splits.class_names):
        raise DataSourceError(
            f"label_idx in {splits.path} runs outside 0..{len(splits.class_names) - 1}: the "
            "manifest and its class_names disagree; re-run food_splits"
        )
    return {str(k): int(v) for k, v in frame["split"].value_counts().items()}


class SplitDataModule(pl.LightningDataModule):
    """Train/val DataLoaders over `ManifestDataset`; plain fields only, so it pickles (DDP)."""

    def __init__(
        self, splits: SplitManifest, preprocess: Preprocess, *, batch_size: int, num_workers: int
    ) -> None:
        super().__init__()
        self.splits = splits
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_ds: ManifestDataset | None = None
        self.val_ds: ManifestDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_ds is None:
            self.train_ds = ManifestDataset(self.splits.frame("train"), self.preprocess, train=True)
            self.val_ds = ManifestDataset(self.splits.frame("val"), self.preprocess, train=False)

    def _loader(self, ds: ManifestDataset, *, train: bool) -> DataLoader:
        # Under DDP each rank sees ceil(len / world) images: judge the last batch per rank.
        trainer = getattr(self, "_trainer", None)
        world = trainer.world_size if trainer is not None else 1
        per_rank = math.ceil(len(ds) / max(world, 1))
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=train,
            # A last training batch of one image breaks BatchNorm; drop it only in that case.
            drop_last=train and per_rank > self.batch_size and per_rank % self.batch_size == 1,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_ds is not None
        return self._loader(self.train_ds, train=True)

    def val_dataloader(self) -> DataLoader:
        assert self.val_ds is not None
        return self._loader(self.val_ds, train=False)
