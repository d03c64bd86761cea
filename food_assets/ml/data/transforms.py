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

from food_assets.ml.data.images import DecodeCache, open_image

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


@dataclass(frozen=True)
class Augment:
    """The train-time augmentation beyond crop and flip (`TrainConfig`'s recipe switches).

    `policy`: `basic` (none), `randaugment` (Cubuk et al. 2020: 2 ops at `magnitude`) or
    `trivialaugment` (Muller & Hutter 2021, TrivialAugmentWide); `color_jitter`: brightness,
    contrast and saturation strength (0: off); `random_erasing`: probability of erasing a
    rectangle with per-pixel noise (Zhong et al. 2020; timm's `re_mode="pixel"`). All are
    torchvision v2 ops, which run the same on PIL images and on decoded uint8 tensors.
    """

    policy: str = "basic"
    magnitude: int = 9
    color_jitter: float = 0.0
    random_erasing: float = 0.0


def _augment_ops(aug: Augment, interp: Any) -> tuple[list[Any], list[Any]]:
    """(ops on the uint8 image, ops on the normalised tensor) for `aug`."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    # torchvision's tensor kernels for rotate/affine take only nearest or bilinear: a bicubic
    # model would fail on every image decoded to a tensor (JPEGs, the GPU path). timm's own
    # RandAugment draws bilinear or bicubic at random; bilinear is the half that works here.
    if interp not in (InterpolationMode.NEAREST, InterpolationMode.BILINEAR):
        interp = InterpolationMode.BILINEAR
    image_ops: list[Any] = []
    if aug.color_jitter:
        j = float(aug.color_jitter)
        image_ops.append(T.ColorJitter(brightness=j, contrast=j, saturation=j))
    if aug.policy == "randaugment":
        image_ops.append(T.RandAugment(num_ops=2, magnitude=aug.magnitude, interpolation=interp))
    elif aug.policy == "trivialaugment":
        image_ops.append(T.TrivialAugmentWide(interpolation=interp))
    elif aug.policy != "basic":
        raise ValueError(f"unknown augment policy {aug.policy!r}")
    tensor_ops: list[Any] = []
    if aug.random_erasing:
        tensor_ops.append(T.RandomErasing(p=aug.random_erasing, value="random"))
    return image_ops, tensor_ops


def build_transform(
    pre: Preprocess, *, train: bool, augment: Augment | None = None
) -> Callable[[Any], torch.Tensor]:
    """PIL image or uint8 CHW tensor -> normalised CHW float tensor.

    Train: random resized crop (scale 0.35-1) and horizontal flip, then `augment`'s ops (colour
    jitter and RandAugment / TrivialAugment on the image, random erasing on the normalised
    tensor, in timm's `create_transform` order). Eval: resize the shorter side to
    `input_size / crop_pct`, then centre crop, as timm and torchvision evaluate; `augment` is
    ignored. Built on `torchvision.transforms.v2`, which runs the same ops on PIL images and on
    tensors.
    """
    from torchvision.transforms import v2 as T

    interp = _interp(pre.interpolation)
    tail = [
        T.ToImage(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(list(pre.mean), list(pre.std)),
    ]
    if train:
        image_ops, tensor_ops = _augment_ops(augment or Augment(), interp)
        head = [
            T.RandomResizedCrop(
                pre.input_size, scale=(0.35, 1.0), interpolation=interp, antialias=True
            ),
            T.RandomHorizontalFlip(),
            *image_ops,
        ]
        tail += tensor_ops
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

    With a `cache` (`DecodeCache`), the decoded 8-bit image, before any random augmentation, is
    kept and each file is decoded once per process (docs/adr/0014).
    """

    preprocess: Preprocess
    train: bool = False
    augment: Augment | None = None  # train only: the recipe's augmentation
    cache: DecodeCache | None = None

    def __post_init__(self) -> None:
        self.transform = build_transform(self.preprocess, train=self.train, augment=self.augment)
        self.draft_size = self.preprocess.resize_size

    def load(self, path: str | Path) -> Image.Image:
        return open_image(path, draft_size=self.draft_size)

    def _decode(self, path: str | Path) -> Any:
        if self.cache is None:
            return self._decode_file(path)[0]
        key = self.cache.key(path)
        image = self.cache.get(key, self.draft_size)
        if image is None:
            image, drafted = self._decode_file(path)
            self.cache.put(key, image, drafted)
        return image

    def _decode_file(self, path: str | Path) -> tuple[Any, int | None]:
        """(decoded image, None when it is a full decode that any caller may share, else the
        draft size it was decoded for: the PIL path may have drafted, so only callers with the
        same `draft_size` share it)."""
        if str(path).lower().endswith(_JPEG_SUFFIXES):
            try:
                with Image.open(path) as img:
                    small_enough = min(img.size) < 2 * self.draft_size
                if small_enough:
                    from torchvision.io import ImageReadMode, decode_image, read_file

                    full = decode_image(
                        read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True
                    )
                    return full, None
            except Exception:  # anything odd: the PIL path decides, with a clear error
                pass
        return self.load(path), self.draft_size

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
