"""LightningDataModule over a split manifest: train transforms for train, eval ones for val."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from food_assets.ml.data.dataset import ManifestDataset
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.data.transforms import Augment, Preprocess
from food_assets.ml.errors import DataSourceError
from food_assets.ml.training.compute import LoaderSettings
from food_assets.ml.training.gpu_input import (
    EncodedBatch,
    EncodedCollate,
    EncodedDataset,
    GpuBatchTransform,
)


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
    """Train/val DataLoaders over `ManifestDataset`; plain fields only, so it pickles (DDP).

    `loader` (`compute.resolve_loader`) sets workers, pinned memory and prefetch; without it,
    `num_workers` alone does, as before the GPU recipe existed. With `loader.gpu_decode` the
    datasets yield file bytes and `transfer_batch_to_device` decodes and transforms each batch
    on the training device (`gpu_input.py`).
    """

    def __init__(
        self,
        splits: SplitManifest,
        preprocess: Preprocess,
        *,
        batch_size: int,
        num_workers: int = 0,
        augment: Augment | None = None,
        loader: LoaderSettings | None = None,
    ) -> None:
        super().__init__()
        self.splits = splits
        self.preprocess = preprocess
        self.augment = augment  # the train split's recipe augmentation
        self.batch_size = batch_size
        self.loader = loader or LoaderSettings(
            num_workers=num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=num_workers > 0,
        )
        self.num_workers = self.loader.num_workers
        self.train_ds: Dataset | None = None
        self.val_ds: Dataset | None = None
        self._device_transforms: dict[bool, GpuBatchTransform] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train_ds is None and self.loader.gpu_decode:
            self.train_ds = EncodedDataset(self.splits.frame("train"), self.preprocess)
            self.val_ds = EncodedDataset(self.splits.frame("val"), self.preprocess)
        if self.train_ds is None:
            self.train_ds = ManifestDataset(
                self.splits.frame("train"), self.preprocess, train=True, augment=self.augment
            )
            self.val_ds = ManifestDataset(self.splits.frame("val"), self.preprocess, train=False)

    def _loader(self, ds: Dataset, *, train: bool) -> DataLoader:
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
            collate_fn=EncodedCollate(train) if self.loader.gpu_decode else None,
            **self.loader.dataloader_kwargs(),
        )

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int):
        """An `EncodedBatch` is decoded and transformed on `device`; anything else just moves."""
        if isinstance(batch, EncodedBatch):
            transform = self._device_transforms.get(batch.train)
            if transform is None:
                augment = self.augment if batch.train else None
                transform = GpuBatchTransform(self.preprocess, train=batch.train, augment=augment)
                self._device_transforms[batch.train] = transform
            return transform(batch, device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> DataLoader:
        assert self.train_ds is not None
        return self._loader(self.train_ds, train=True)

    def val_dataloader(self) -> DataLoader:
        assert self.val_ds is not None
        return self._loader(self.val_ds, train=False)
