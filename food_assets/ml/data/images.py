"""Decoding images the same way everywhere: scan, training, evaluation, predict and the demo.

- `open_image` decodes fully (not just the header) and normalises the mode to 8-bit RGB:
  EXIF orientation applied, alpha composited on white, palette/CMYK/greyscale/16-bit converted.
- For JPEG it asks libjpeg for a reduced-size decode (`Image.draft`) when the caller needs at
  most half the source's shorter side (`draft_size`): a 512x384 Food-101 photo for a 224 px model
  gets no draft (384 < 2 x 224), for a 112 px one it decodes at 256x192.
  `benchmarks/data_loading.py` prints which decode ran and what it costs.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from food_assets.ml.errors import FoodAssetsError

#: Default pixel limit: anything larger is treated as a decompression bomb and refused.
DEFAULT_MAX_PIXELS = 64_000_000

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


class ImageDecodeError(FoodAssetsError):
    """The file is not a decodable image; `reason` is a short machine-friendly tag."""

    def __init__(self, path: str | os.PathLike[str], reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        msg = f"{path}: {reason}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB without surprises (alpha on white, 16-bit rescaled)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit PNGs decode as mode I with values up to 65535; scale by the type's range.
        hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(arr.astype(np.uint8), mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(
    path: str | os.PathLike[str],
    *,
    draft_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
) -> Image.Image:
    """Open, fully decode and normalise an image to RGB.

    Args:
        path: image file.
        draft_size: the smallest side the caller needs. For JPEGs libjpeg then decodes at the
            largest 1/2, 1/4 or 1/8 scale that still keeps both sides at least this large.
        max_pixels: images with more pixels are refused as decompression bombs.
        data: the file's bytes, when the caller has read them already; `path` then only names
            the image in errors. The scan reads each file once, behind its file-type guards, so
            that a file swapped or chmod-ed mid-scan cannot be reopened here as something else.

    Raises:
        ImageDecodeError: with a short reason (`empty file`, `not an image`, `truncated or
            corrupt`, `decompression bomb`, `unreadable`).
    """
    path = Path(path)
    try:
        size = path.stat().st_size if data is None else len(data)
    except OSError as exc:
        raise ImageDecodeError(path, "unreadable", exc.strerror or str(exc)) from exc
    if size == 0:
        raise ImageDecodeError(path, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageDecodeError(
                        path, "decompression bomb", f"{w}x{h} px is over the {max_pixels} px limit"
                    )
                if draft_size and img.format == "JPEG" and min(w, h) >= 2 * draft_size:
                    img.draft("RGB", (draft_size, draft_size))
                img.load()  # full decode: truncated data fails here, not later in a DataLoader
                img = ImageOps.exif_transpose(img) or img
                return to_rgb(img)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(path, "decompression bomb", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, "not an image", "no image decoder recognises it") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(path, "truncated or corrupt", str(exc)) from exc
    except Exception as exc:  # decoders raise odd things on hostile input; never let it escape
        raise ImageDecodeError(path, "unreadable", f"{type(exc).__name__}: {exc}") from exc


#: Default byte budget of the process-wide decode cache; FOOD_ASSETS_DECODE_CACHE_MB overrides
#: it (0 turns the cache off). The sample (400 images at 128 px) needs 20 MB; Food-101's train
#: split (75,750 photos at about 512x384) would need 44 GB, so datasets like it never use it.
DEFAULT_DECODE_CACHE_MB = 512


class DecodeCache:
    """Decoded images kept for the rest of the process, up to a byte budget.

    Training decodes the same files every epoch, and in one Dagster run every model trains and
    evaluates on the same split: each file is decoded once and its 8-bit RGB image (before any
    random augmentation) reused. Keys are the path with its size and mtime, so a file rewritten
    on disk is decoded again. New images are admitted until the budget is spent and nothing is
    evicted: a dataset streamed in epochs gains nothing from LRU once it is over the budget,
    so `ManifestDataset` only uses the cache for a dataset that fits (docs/adr/0014).
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = int(budget_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: dict[tuple[str, int, int], tuple[Any, int | None]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(path: str | os.PathLike[str]) -> tuple[str, int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None  # the decoder raises the clear error
        return (str(path), st.st_size, st.st_mtime_ns)

    def get(self, key: tuple[str, int, int] | None, draft_size: int) -> Any | None:
        """The cached image if it is what a decode with `draft_size` would give, else None.

        An image decoded in full serves every caller whose draft would not have applied (its
        shorter side is under twice the caller's `draft_size`); a draft-decoded one only
        callers with the same `draft_size`.
        """
        entry = self._entries.get(key) if key is not None else None
        if entry is not None:
            image, drafted = entry
            if drafted == draft_size or (drafted is None and _short_side(image) < 2 * draft_size):
                self.hits += 1
                return image
        self.misses += 1
        return None

    def put(self, key: tuple[str, int, int] | None, image: Any, drafted: int | None) -> bool:
        """Keep `image` (decoded with draft `drafted`, None: in full) if the budget allows."""
        size = _image_bytes(image)
        with self._lock:
            if key is None or key in self._entries or self.nbytes + size > self.budget_bytes:
                return False
            self._entries[key] = (image, drafted)
            self.nbytes += size
            return True

    def fits(self, nbytes: int) -> bool:
        """Whether `nbytes` more would fit in what is left of the budget."""
        return self.nbytes + nbytes <= self.budget_bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


def _short_side(image: Any) -> int:
    return min(image.size) if isinstance(image, Image.Image) else min(image.shape[-2:])


def _image_bytes(image: Any) -> int:
    if isinstance(image, Image.Image):
        return image.width * image.height * len(image.getbands())
    return image.numel() * image.element_size()


def _budget_from_env() -> int:
    text = os.environ.get("FOOD_ASSETS_DECODE_CACHE_MB", "").strip()
    try:
        mb = float(text) if text else DEFAULT_DECODE_CACHE_MB
    except ValueError:
        warnings.warn(
            f"FOOD_ASSETS_DECODE_CACHE_MB={text!r} is not a number of megabytes: using "
            f"{DEFAULT_DECODE_CACHE_MB}",
            stacklevel=2,
        )
        mb = DEFAULT_DECODE_CACHE_MB
    return int(max(mb, 0) * 2**20)


#: The process-wide cache `ManifestDataset` uses (training, evaluation and Grad-CAM share it).
DECODE_CACHE = DecodeCache(_budget_from_env())
