"""Run a model over a split manifest and keep what every metric needs: logits, labels, paths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from food_assets.ml.data.dataset import ManifestDataset
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import ConfigError
from food_assets.ml.training.precision import eval_autocast, resolve_eval_precision


@dataclass(frozen=True)
class Predictions:
    """Raw model outputs on one split, in manifest order.

    Attributes:
        logits: float32 `(N, C)` class logits (before any temperature).
        labels: int64 `(N,)` true class indices.
        paths: `N` image paths, aligned with the rows above.
    """

    logits: np.ndarray
    labels: np.ndarray
    paths: list[str]

    def __post_init__(self) -> None:
        logits = np.asarray(self.logits)
        labels = np.asarray(self.labels)
        if logits.ndim != 2:
            raise ConfigError(f"logits must be 2-D (N, C); got shape {logits.shape}")
        if labels.shape != (logits.shape[0],):
            raise ConfigError(
                f"{logits.shape[0]} logit rows but labels have shape {labels.shape}; "
                "pass one label per row"
            )
        if len(self.paths) != logits.shape[0]:
            raise ConfigError(
                f"{logits.shape[0]} logit rows but {len(self.paths)} paths; pass one path per row"
            )
        # Frozen dataclass: normalise dtypes once so every consumer sees the same arrays.
        object.__setattr__(self, "logits", logits.astype(np.float32, copy=False))
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        object.__setattr__(self, "paths", [str(p) for p in self.paths])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def __len__(self) -> int:
        return int(self.logits.shape[0])


def predict_logits(
    model: nn.Module,
    frame: pd.DataFrame,
    preprocess: Preprocess,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> Predictions:
    """Logits of `model` on every manifest row, with the evaluation transform.

    The model is moved to `device` and run in eval mode under `torch.inference_mode` (and
    bf16 autocast when `precision` resolves to bf16); its previous train/eval mode is restored
    afterwards. Rows keep manifest order (no shuffling)
    and the eval transform is deterministic, so the result depends only on the model and data.

    Args:
        model: returns `(N, C)` logits for a normalised `(N, 3, H, W)` batch.
        frame: manifest rows with `path` and `label_idx` (e.g. `SplitManifest.frame("test")`).
        preprocess: the model's own preprocessing (registry entry or bundle card).
        batch_size: images per forward pass.
        num_workers: DataLoader worker processes (0 decodes in this process).
        device: where the forward pass runs.
        precision: `fp32`, `bf16` (autocast; the logits come back as float32) or `auto` (bf16
            where the device computes it natively: `ml/training/precision.py`).

    Raises:
        ConfigError: empty frame, bad batch size or precision, or a model whose output is not
            2-D.
    """
    if len(frame) == 0:
        raise ConfigError("the split has no rows to predict on; check the split manifest")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    precision = resolve_eval_precision(precision, device)
    dataset = ManifestDataset(frame, preprocess, train=False)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, drop_last=False
    )
    was_training = model.training
    model.to(device).eval()
    chunks: list[np.ndarray] = []
    try:
        with torch.inference_mode(), eval_autocast(precision, device):
            for images, _ in loader:
                out = model(images.to(device))
                if out.ndim != 2:
                    raise ConfigError(
                        f"the model returned shape {tuple(out.shape)}; evaluation needs "
                        "(batch, num_classes) logits"
                    )
                chunks.append(out.float().cpu().numpy())
    finally:
        model.train(was_training)
    return Predictions(
        logits=np.concatenate(chunks, axis=0),
        labels=np.asarray(dataset.labels, dtype=np.int64),
        paths=list(dataset.paths),
    )
