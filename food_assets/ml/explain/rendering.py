"""Drawing Grad-CAM: the heat-map overlay and the gallery PNG with its tile geometry."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from food_assets.ml.artifacts import write_image

_LABEL_LINES = 3
_LINE_H = 12
_PAD = 4


@dataclass(frozen=True)
class GradcamTile:
    """One gallery tile: the model input as an RGB float image, its CAM and its labels."""

    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    cam: np.ndarray  # (H, W) float32 in [0, 1]
    true_class: str
    pred_class: str
    confidence: float
    path: str = ""


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The CAM as a heat map over the image (the library's `show_cam_on_image`), uint8 RGB."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(np.clip(image, 0, 1).astype(np.float32), cam, use_rgb=True)


def tile_boxes(n: int, tile_w: int, tile_h: int, columns: int) -> list[tuple[int, int, int, int]]:
    """Pixel box `(x0, y0, x1, y1)` of each tile's image inside the gallery PNG."""
    cell_w, cell_h = tile_w + 2 * _PAD, tile_h + 2 * _PAD + _LABEL_LINES * _LINE_H
    boxes = []
    for i in range(n):
        r, c = divmod(i, columns)
        x0, y0 = c * cell_w + _PAD, r * cell_h + _PAD
        boxes.append((x0, y0, x0 + tile_w, y0 + tile_h))
    return boxes


def _fit(text: str, draw: ImageDraw.ImageDraw, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def render_gallery(
    tiles: Sequence[GradcamTile],
    out_path: str | Path,
    *,
    columns: int = 4,
    title: str | None = None,
) -> Path:
    """Write a PNG grid: each tile the image with its CAM overlay, labelled below.

    Tiles are pasted pixel for pixel (no resampling) at `tile_boxes(...)`, so a reader can crop a
    tile back out and compare it with `overlay(image, cam)`. The labels are the true class, the
    predicted class and its confidence. `title` is only drawn on an empty gallery.
    """
    columns = max(1, columns)
    font = ImageFont.load_default()
    if not tiles:
        canvas = Image.new("RGB", (320, 40), "white")
        ImageDraw.Draw(canvas).text((8, 12), title or "no images", fill="black", font=font)
        return write_image(out_path, canvas)
    h, w = tiles[0].image.shape[:2]
    if any(t.image.shape[:2] != (h, w) for t in tiles):
        raise ValueError("all tiles of a gallery must have the same size")
    boxes = tile_boxes(len(tiles), w, h, columns)
    rows = math.ceil(len(tiles) / columns)
    cell_w, cell_h = w + 2 * _PAD, h + 2 * _PAD + _LABEL_LINES * _LINE_H
    canvas = Image.new("RGB", (min(columns, len(tiles)) * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for tile, (x0, y0, _, y1) in zip(tiles, boxes, strict=True):
        canvas.paste(Image.fromarray(overlay(tile.image, tile.cam)), (x0, y0))
        ok = tile.true_class == tile.pred_class
        lines = [
            (f"true: {tile.true_class}", "black"),
            (f"pred: {tile.pred_class}", "darkgreen" if ok else "firebrick"),
            (f"conf: {tile.confidence:.2f}", "black"),
        ]
        for k, (text, colour) in enumerate(lines):
            draw.text((x0, y1 + 1 + k * _LINE_H), _fit(text, draw, font, w), fill=colour, font=font)
    return write_image(out_path, canvas)
