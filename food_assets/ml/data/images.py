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
import warnings
from pathlib import Path

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


def is_image_candidate(path: Path) -> bool:
    """Files the scanner looks at: not hidden, not under a hidden folder."""
    return not any(part.startswith(".") for part in path.parts)
