"""GPU input: loader workers read JPEG bytes; the GPU decodes them (nvjpeg) and transforms.

A fast GPU trains ResNet-50 at thousands of images per second; decoding and resizing that many
JPEGs on the CPU takes more cores than a GPU node has per device. Here the workers only read
each file's bytes, and the batch is decoded with `torchvision.io.decode_jpeg(device="cuda")` and
transformed on the GPU with the same `torchvision.transforms.v2` pipeline the CPU path runs
(`build_transform`: random resized crop, flip and the recipe's augmentation for training,
resize and centre crop for evaluation, then normalisation). The model sees the same kind of
batch either way. docs/adr/0016-gpu-input-pipeline.md says why nvjpeg and not NVIDIA DALI.

Files nvjpeg should not get, decoded on the CPU in the worker instead, exactly as
`ImagePipeline` would: anything that is not a JPEG, a JPEG with an EXIF rotation (nvjpeg does
not apply it) or one in CMYK. The same code runs with `device="cpu"` (torchvision's libjpeg-turbo
decoder), which is how the tests check it against the CPU path.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import Dataset

from food_assets.ml.data.images import ImageDecodeError, open_image
from food_assets.ml.data.transforms import Augment, Preprocess, build_transform

_JPEG_MAGIC = b"\xff\xd8\xff"
_EXIF_ORIENTATION = 0x0112
# Ops that act on a whole (N, C, H, W) batch the same way they act on each image.
_BATCHABLE = ("ToImage", "ToDtype", "Normalize")


@contextlib.contextmanager
def _quiet_decoders() -> Iterator[None]:
    """torchvision 0.29 warns that its decoders move to TorchCodec; they still work."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*decoding and encoding capabilities")
        yield


def nvjpeg_can_decode(data: bytes) -> bool:
    """Whether these file bytes are a JPEG that nvjpeg decodes as the CPU path would.

    Reads only the header: a JPEG in RGB or greyscale with no EXIF rotation.
    """
    if not data.startswith(_JPEG_MAGIC):
        return False
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode not in ("RGB", "L"):
                return False
            return img.getexif().get(_EXIF_ORIENTATION, 1) == 1
    except Exception:  # a header PIL cannot read: the CPU path decides, with a clear error
        return False


class EncodedDataset(Dataset):
    """Manifest rows -> (file bytes as a 1-D uint8 tensor, label, path).

    A file nvjpeg should not decode (`nvjpeg_can_decode`) comes back decoded instead, as a
    3-D uint8 RGB tensor (PIL, EXIF rotation applied, libjpeg draft for large JPEGs), so the
    batch holds both kinds; `GpuBatchTransform` tells them apart by their shape.
    """

    def __init__(self, frame: pd.DataFrame, preprocess: Preprocess) -> None:
        missing = {"path", "label_idx"} - set(frame.columns)
        if missing:
            raise ValueError(f"manifest lacks columns {sorted(missing)}")
        self.paths = frame["path"].astype(str).tolist()
        self.labels = frame["label_idx"].astype(int).tolist()
        self.draft_size = preprocess.resize_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        path = self.paths[i]
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ImageDecodeError(path, "unreadable", exc.strerror or str(exc)) from exc
        if nvjpeg_can_decode(data):
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), self.labels[i], path
        return decode_on_cpu(path, data, self.draft_size), self.labels[i], path


def decode_on_cpu(path: str, data: bytes | None, draft_size: int) -> torch.Tensor:
    """A uint8 CHW RGB tensor through `open_image` (PIL), the CPU path's decoder of last resort."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    return pil_to_tensor(open_image(path, draft_size=draft_size, data=data))


@dataclass
class EncodedBatch:
    """A batch as the workers hand it over: undecoded images, labels, and which transform."""

    images: list[torch.Tensor]  # 1-D JPEG bytes or 3-D uint8 RGB, one per image
    labels: torch.Tensor
    paths: list[str]
    train: bool

    def __len__(self) -> int:
        return len(self.images)

    def pin_memory(self) -> EncodedBatch:
        # The DataLoader's pin thread calls this. nvjpeg reads the bytes from pageable memory;
        # only the labels (and CPU-decoded images) travel by copy.
        self.labels = self.labels.pin_memory()
        self.images = [t.pin_memory() if t.ndim == 3 else t for t in self.images]
        return self


@dataclass(frozen=True)
class EncodedCollate:
    """`collate_fn` of the encoded loaders (a class, so the DataLoader pickles it to workers)."""

    train: bool

    def __call__(self, items: Sequence[tuple[torch.Tensor, int, str]]) -> EncodedBatch:
        images, labels, paths = zip(*items, strict=True)
        return EncodedBatch(
            images=list(images),
            labels=torch.as_tensor(labels, dtype=torch.int64),
            paths=list(paths),
            train=self.train,
        )


def _segments(ops: Sequence[Any]) -> list[tuple[bool, Callable[[Any], Any]]]:
    """`build_transform`'s ops in runs: (whole-batch?, the run's ops composed)."""
    from torchvision.transforms import v2 as T

    runs: list[tuple[bool, list[Any]]] = []
    for op in ops:
        batchable = type(op).__name__ in _BATCHABLE
        if runs and runs[-1][0] == batchable:
            runs[-1][1].append(op)
        else:
            runs.append((batchable, [op]))
    return [(batchable, T.Compose(run)) for batchable, run in runs]


class GpuBatchTransform:
    """Decode an `EncodedBatch` on `device` and apply the split's transform there.

    The transform is `build_transform(preprocess, train=..., augment=...)`, the CPU path's own:
    random and geometric ops run per image (each image draws its own crop, flip and
    augmentation, and decoded images differ in size), and the runs of batch-safe ops between them
    (`ToImage`, `ToDtype`, `Normalize`) once on the stacked batch.
    """

    def __init__(self, preprocess: Preprocess, *, train: bool, augment: Augment | None = None):
        transform = build_transform(preprocess, train=train, augment=augment)
        self.segments = _segments(transform.transforms)

    def decode(self, batch: EncodedBatch, device: torch.device | str) -> list[torch.Tensor]:
        """The batch's images as uint8 CHW tensors on `device` (nvjpeg on CUDA, in one call)."""
        from torchvision.io import ImageReadMode, decode_jpeg

        device = torch.device(device)
        out: list[torch.Tensor | None] = [None] * len(batch.images)
        encoded = [i for i, t in enumerate(batch.images) if t.ndim == 1]
        for i, t in enumerate(batch.images):
            if t.ndim == 3:
                out[i] = t.to(device, non_blocking=True)
        if encoded:
            data = [batch.images[i] for i in encoded]
            with _quiet_decoders():
                try:
                    decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
                except RuntimeError:
                    # One bad file fails the whole batch call; find it one image at a time.
                    decoded = [self._decode_one(batch, i, device) for i in encoded]
            for i, img in zip(encoded, decoded, strict=True):
                out[i] = img
        return [t for t in out if t is not None]

    @staticmethod
    def _decode_one(batch: EncodedBatch, i: int, device: torch.device) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(batch.images[i], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            # The CPU path's decoder: the image, or an ImageDecodeError naming the file.
            return decode_on_cpu(batch.paths[i], None, 0).to(device)

    def __call__(
        self, batch: EncodedBatch, device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised float images `(N, 3, H, W)` on `device`, labels on `device`)."""
        x: Any = self.decode(batch, device)
        for batchable, ops in self.segments:
            if batchable:
                x = ops(torch.stack(list(x)) if isinstance(x, list) else x)
            else:
                x = [ops(img) for img in x]
        x = torch.stack(list(x)) if isinstance(x, list) else x
        labels = batch.labels.to(device, non_blocking=True)
        return x.as_subclass(torch.Tensor), labels


__all__ = [
    "EncodedBatch",
    "EncodedCollate",
    "EncodedDataset",
    "GpuBatchTransform",
    "decode_on_cpu",
    "nvjpeg_can_decode",
]
