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


INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def validate_preprocess(d: Any, bad: Callable[[str], Exception]) -> Preprocess:
    """A `Preprocess` from untrusted JSON: exact fields, sane types and ranges.

    Model cards (`ml/models/bundle.py`) and ONNX metadata (`ml/export/metadata.py`) both store a
    `Preprocess` as JSON and read it back through this. `bad(message)` makes the exception
    raised, so each caller reports the problem in its own terms.
    """
    fields = set(Preprocess.__dataclass_fields__)
    if not isinstance(d, dict) or set(d) != fields:
        raise bad(f"preprocess must be an object with exactly the fields {sorted(fields)}")
    size = d["input_size"]
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 4096:
        raise bad(f"preprocess.input_size must be an integer in [8, 4096] (got {size!r})")
    for key in ("mean", "std"):
        v = d[key]
        if (
            not isinstance(v, list | tuple)
            or len(v) != 3
            or not all(_is_num(x) and math.isfinite(x) for x in v)
        ):
            raise bad(f"preprocess.{key} must be a list of 3 numbers (got {v!r})")
    if not all(x > 0 for x in d["std"]):
        raise bad("preprocess.std must be positive")
    if d["interpolation"] not in INTERPOLATIONS:
        raise bad(f"preprocess.interpolation must be one of {INTERPOLATIONS}")
    crop = d["crop_pct"]
    if not _is_num(crop) or not 0.05 <= crop <= 2.0:
        raise bad(f"preprocess.crop_pct must be a number in [0.05, 2] (got {crop!r})")
    return Preprocess.from_dict(d)


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _interp(name: str):
    from torchvision.transforms import InterpolationMode

    try:
        return InterpolationMode(name)
    except ValueError as exc:
        raise ValueError(
            f"unknown interpolation {name!r}; use bilinear, bicubic or nearest"
        ) from exc


def build_transform(pre: Preprocess, *, train: bool) -> Callable[[Any], torch.Tensor]:
    """PIL image or uint8 CHW tensor -> normalised CHW float tensor.

    Train: random resized crop (scale 0.35-1) and horizontal flip. Eval: resize the shorter side
    to `input_size / crop_pct`, then centre crop, as timm and torchvision evaluate. Built on
    `torchvision.transforms.v2`, which runs the same ops on PIL images and on tensors.
    """
    from torchvision.transforms import v2 as T

    interp = _interp(pre.interpolation)
    tail = [
        T.ToImage(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(list(pre.mean), list(pre.std)),
    ]
    if train:
        head = [
            T.RandomResizedCrop(
                pre.input_size, scale=(0.35, 1.0), interpolation=interp, antialias=True
            ),
            T.RandomHorizontalFlip(),
        ]
    else:
        head = [
            T.Resize(pre.resize_size, interpolation=interp, antialias=True),
            T.CenterCrop(pre.input_size),
        ]
    return T.Compose(head + tail)


_JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


@dataclass
class ImagePipeline:
    """Path -> model-ready tensor, by the fastest decode that fits the file.

    - A JPEG much larger than needed: PIL with `draft` (libjpeg decodes at 1/2, 1/4 or 1/8 scale).
    - Any other JPEG: torchvision's libjpeg-turbo decoder straight to a uint8 tensor, so the
      resize runs on the tensor (faster than PIL's on these 2-core machines; see
      `benchmarks/data_loading.py`).
    - Everything else, or a JPEG torchvision refuses: `open_image` (PIL), which also turns a
      broken file into a clear `ImageDecodeError`.
    """

    preprocess: Preprocess
    train: bool = False

    def __post_init__(self) -> None:
        self.transform = build_transform(self.preprocess, train=self.train)
        self.draft_size = self.preprocess.resize_size

    def load(self, path: str | Path) -> Image.Image:
        return open_image(path, draft_size=self.draft_size)

    def _decode(self, path: str | Path) -> Any:
        if str(path).lower().endswith(_JPEG_SUFFIXES):
            try:
                with Image.open(path) as img:
                    small_enough = min(img.size) < 2 * self.draft_size
                if small_enough:
                    from torchvision.io import ImageReadMode, decode_image, read_file

                    return decode_image(
                        read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True
                    )
            except Exception:  # anything odd: the PIL path decides, with a clear error
                pass
        return self.load(path)

    def __call__(self, path: str | Path) -> torch.Tensor:
        return self.transform(self._decode(path))

    def from_image(self, image: Image.Image) -> torch.Tensor:
        from food_assets.ml.data.images import to_rgb

        return self.transform(to_rgb(image))


def denormalize(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """Inverse of the normalisation, clamped to [0, 1] (for galleries and overlays)."""
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)
