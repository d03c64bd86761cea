"""Per-model preprocessing as data (`Preprocess`) and the transforms built from it.

Each registry entry carries a `Preprocess`; for timm models it is derived from timm's own data
config (never retyped). Training, evaluation, Grad-CAM, ONNX export, `predict` and the demo all
build their transforms here, so one model is always fed the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from food_assets.ml.data.images import open_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input: size, resize/crop policy and normalisation."""

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # "bilinear" | "bicubic" | "nearest"
    crop_pct: float = 0.875

    def with_size(self, input_size: int | None) -> Preprocess:
        return self if not input_size else dataclasses.replace(self, input_size=int(input_size))

    @property
    def resize_size(self) -> int:
        """Shorter side before the centre crop at evaluation time."""
        return int(math.floor(self.input_size / self.crop_pct))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        d = dict(d)
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        return cls(**d)


def _interp(name: str):
    from torchvision.transforms import InterpolationMode

    try:
        return InterpolationMode(name)
    except ValueError as exc:
        raise ValueError(f"unknown interpolation {name!r}; use bilinear, bicubic or nearest") from exc


def build_transform(pre: Preprocess, *, train: bool) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> normalised CHW float tensor.

    Train: random resized crop (scale 0.35-1) and horizontal flip. Eval: resize the shorter side
    to `input_size / crop_pct`, then centre crop, as timm and torchvision evaluate.
    """
    from torchvision import transforms as T

    interp = _interp(pre.interpolation)
    tail = [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    if train:
        head = [
            T.RandomResizedCrop(pre.input_size, scale=(0.35, 1.0), interpolation=interp),
            T.RandomHorizontalFlip(),
        ]
    else:
        head = [T.Resize(pre.resize_size, interpolation=interp), T.CenterCrop(pre.input_size)]
    return T.Compose(head + tail)


@dataclass
class ImagePipeline:
    """Path -> model-ready tensor: the fast decode (JPEG draft) plus the model's transform."""

    preprocess: Preprocess
    train: bool = False

    def __post_init__(self) -> None:
        self.transform = build_transform(self.preprocess, train=self.train)
        self.draft_size = self.preprocess.resize_size

    def load(self, path: str | Path) -> Image.Image:
        return open_image(path, draft_size=self.draft_size)

    def __call__(self, path: str | Path) -> torch.Tensor:
        return self.transform(self.load(path))

    def from_image(self, image: Image.Image) -> torch.Tensor:
        from food_assets.ml.data.images import to_rgb

        return self.transform(to_rgb(image))


def denormalize(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """Inverse of the normalisation, clamped to [0, 1] (for galleries and overlays)."""
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)
