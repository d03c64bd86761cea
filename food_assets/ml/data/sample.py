"""The embedded `sample` source: a small, deterministic, food-themed synthetic image set.

Ten Food-101 class names, each drawn as a simple stylised dish (a pizza is a crust disc with
toppings, a waffle a gridded square, fries a bundle of sticks...) at a random place, scale and
colour jitter over a varied background (gradients, table-cloth checks, stripes, noise). The box
of each object is stored with the image, so Grad-CAM can be checked against where the object
really is (the pointing game).

The same parameters give the same bytes: every image draws from its own generator seeded with
(seed, class index, image index), and JPEG encoding is deterministic.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from food_assets.ml.artifacts import atomic_dir

Box = tuple[int, int, int, int]
RGB = tuple[int, int, int]

SAMPLE_FORMAT_VERSION = 1
BOXES_FILE = "boxes.csv"
INFO_FILE = "sample.json"


@dataclass(frozen=True)
class SampleSpec:
    """Parameters of the sample set; the generated folder is keyed by them."""

    seed: int = 0
    num_classes: int = 10
    images_per_class: int = 40
    image_size: int = 128
    jpeg_quality: int = 90

    def folder_name(self) -> str:
        return (
            f"v{SAMPLE_FORMAT_VERSION}-seed{self.seed}-c{self.num_classes}"
            f"-n{self.images_per_class}-s{self.image_size}"
        )


def _jitter(rng: np.random.Generator, base: RGB, amount: int = 40) -> RGB:
    c = np.asarray(base) + rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(c, 0, 255))  # type: ignore[return-value]


# Each painter draws one dish inside `box` (x0, y0, x1, y1) and returns the tight box it used.
Painter = Callable[[ImageDraw.ImageDraw, Box, np.random.Generator], Box]


def _pizza(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> Box:
    x0, y0, x1, y1 = b
    d.ellipse(b, fill=_jitter(rng, (214, 160, 90)))
    m = max(2, (x1 - x0) // 10)
    d.ellipse((x0 + m, y0 + m, x1 - m, y1 - m), fill=_jitter(rng, (225, 75, 45)))
    r = max(2, (x1 - x0) // 11)
    cx, cy, rad = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 - 2 * m - r
    for _ in range(6):
        a, t = rng.uniform(0, 2 * math.pi), math.sqrt(rng.uniform(0, 1)) * rad
        px, py = cx + t * math.cos(a), cy + t * math.sin(a)
        d.ellipse((px - r, py - r, px + r, py + r), fill=_jitter(rng, (150, 30, 30), 20))
    return b


def _donut(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> Box:
    x0, y0, x1, y1 = b
    w = max(3, (x1 - x0) // 4)
    d.ellipse(b, outline=_jitter(rng, (200, 130, 70)), width=w)
    d.ellipse((x0 + 2, y0 + 2, x1 - 2, y1 - 2), outline=_jitter(rng, (240, 120, 190)), width=w // 2)
    return b


def _waffle(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> Box:
    x0, y0, x1, y1 = b
    d.rectangle(b, fill=_jitter(rng, (222, 170, 80)))
    step = max(3, (x1 - x0) // 5)
    line = _jitter(rng, (150, 95, 35), 20)
    for x in range(x0 + step, x1, step):
        d.line((x, y0, x, y1), fill=line, width=max(1, step // 4))
    for y in range(y0 + step, y1, step):
        d.line((x0, y, x1, y), fill=line, width=max(1, step // 4))
    return b


def _fries(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> Box:
    x0, y0, x1, y1 = b
    w = x1 - x0
    n = 7
    stick = max(2, w // (n + 3))
    colour = _jitter(rng, (245, 205, 70))
    for i in range(n):
        sx = x0 + int((i + 0.5) * w / n) - stick // 2
        top = y0 + int(rng.uniform(0, 0.3) * (y1 - y0))
        d.rectangle((sx, top, sx + stick, y1), fill=colour)
    d.rectangle((x0, y0 + (y1 - y0) * 2 // 3, x1, y1), fill=_jitter(rng, (200, 30, 30)))
    return b


def _sushi(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> Box:
    x0, y0, x1, y1 = b
    h = y1 - y0
    top = y0 + h // 4
    d.rounded_rectangle((x0, top, x1, y1 - h // 6), radius=max(2, h // 6), fill=(245, 245, 240))
    d.rounded_rectangle(
        (x0, y0, x1, top + h // 5), radius=max(2, h // 8), fill=_jitter(rng, (250, 120, 70))
    )
    d.rectangle(
        ((x0 + x1) // 2 - h // 10, y0, (x0 + x1) // 2 + h // 10, y1 - h // 6), fill=(25, 40, 25)
    )
    return b


def _ice_cream(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> Box:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    mid = y0 + int(h * 0.45)
    d.polygon(
        [(x0 + w // 6, mid), (x1 - w // 6, mid), ((x0 + x1) // 2, y1)],
        fill=_jitter(rng, (205, 150, 80)),
    )
    d.ellipse((x0 + w // 8, y0, x1 - w // 8, mid + h // 8), fill=_jitter(rng, (250, 200, 220), 50))
    return b


def _hamburger(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> Box:
    x0, y0, x1, y1 = b
    h = y1 - y0
    bun = _jitter(rng, (215, 150, 70))
    d.chord((x0, y0, x1, y0 + int(h * 0.8)), 180, 360, fill=bun)
    d.rectangle((x0, y0 + int(h * 0.42), x1, y0 + int(h * 0.52)), fill=_jitter(rng, (80, 170, 60)))
    d.rectangle((x0, y0 + int(h * 0.52), x1, y0 + int(h * 0.72)), fill=_jitter(rng, (90, 50, 30)))
    d.rounded_rectangle((x0, y0 + int(h * 0.74), x1, y1), radius=max(2, h // 10), fill=bun)
    return b


def _taco(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> Box:
    x0, y0, x1, y1 = b
    h = y1 - y0
    d.chord((x0, y0, x1, y1 + h), 180, 360, fill=_jitter(rng, (240, 200, 90)))
    for i in range(5):
        x = x0 + (i + 1) * (x1 - x0) // 6
        d.ellipse(
            (x - h // 8, y0 + h // 5, x + h // 8, y0 + h // 2), fill=_jitter(rng, (70, 160, 50))
        )
    return b


def _spring_rolls(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> Box:
    x0, y0, x1, y1 = b
    h = y1 - y0
    colour = _jitter(rng, (220, 160, 60))
    for i in range(3):
        ty = y0 + i * h // 3
        d.rounded_rectangle(
            (x0, ty + 1, x1, ty + h // 3 - 1),
            radius=max(2, h // 7),
            fill=colour,
            outline=_jitter(rng, (150, 90, 30), 20),
            width=1,
        )
    return b


def _cake(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> Box:
    x0, y0, x1, y1 = b
    h = y1 - y0
    d.polygon([(x0, y1), (x1, y1), (x1, y0)], fill=_jitter(rng, (90, 50, 25), 25))
    cream = _jitter(rng, (240, 225, 200), 15)
    for k in (0.35, 0.65):
        y = y0 + int(h * k)
        x_start = x1 - int((x1 - x0) * k)
        d.line((x_start, y, x1, y), fill=cream, width=max(2, h // 14))
    return b


CLASS_PAINTERS: dict[str, Painter] = {
    "pizza": _pizza,
    "donuts": _donut,
    "waffles": _waffle,
    "french_fries": _fries,
    "sushi": _sushi,
    "ice_cream": _ice_cream,
    "hamburger": _hamburger,
    "tacos": _taco,
    "spring_rolls": _spring_rolls,
    "chocolate_cake": _cake,
}
SAMPLE_CLASSES = tuple(CLASS_PAINTERS)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A varied background: gradient, checks, stripes or plain, always with some noise."""
    a = rng.integers(40, 255, size=3).astype(np.float32)
    b = rng.integers(40, 255, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    kind = rng.integers(0, 4)
    angle = rng.uniform(0, math.pi)
    if kind == 0:  # linear gradient
        t = (np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2
    elif kind == 1:  # table-cloth checks
        cells = rng.integers(3, 9)
        t = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2).astype(np.float32) * 0.6
    elif kind == 2:  # stripes
        t = (np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(8, 30)) + 1) / 4
    else:  # nearly plain
        t = np.full_like(xx, rng.uniform(0, 1))
    img = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    img += rng.normal(0, 10, size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="RGB")


def render_sample_image(
    class_name: str, index: int, *, seed: int = 0, image_size: int = 128
) -> tuple[Image.Image, Box]:
    """Draw one image of `class_name`; returns the image and the object's box (x0, y0, x1, y1)."""
    class_idx = SAMPLE_CLASSES.index(class_name)
    rng = np.random.default_rng([seed, class_idx, index])
    img = _background(rng, image_size)
    scale = rng.uniform(0.32, 0.62)
    side = max(8, int(image_size * scale))
    aspect = rng.uniform(0.8, 1.25)
    w = min(image_size - 2, max(8, int(side * aspect)))
    h = min(image_size - 2, max(8, int(side / aspect)))
    x0 = int(rng.integers(1, image_size - w))
    y0 = int(rng.integers(1, image_size - h))
    box = (x0, y0, x0 + w, y0 + h)
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    CLASS_PAINTERS[class_name](ImageDraw.Draw(layer), box, rng)
    img.paste(layer, (0, 0), layer)
    # A touch of blur makes it look less like vector art and more like a (very simple) photo.
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 0.8))))
    return img, box


def generate_sample(root: str | Path, spec: SampleSpec = SampleSpec()) -> Path:
    """Generate the sample set under `root/<spec folder>` unless it is already there.

    Layout: `<class>/<class>_<i>.jpg`, `boxes.csv` (relative path, x0, y0, x1, y1) and
    `sample.json` (the spec). Written to a temporary folder and renamed, so a killed generation
    never leaves a half set that later runs would trust.
    """
    if not 2 <= spec.num_classes <= len(SAMPLE_CLASSES):
        raise ValueError(f"num_classes must be 2..{len(SAMPLE_CLASSES)} (got {spec.num_classes})")
    if spec.images_per_class < 1 or spec.image_size < 32:
        raise ValueError("images_per_class must be >= 1 and image_size >= 32")
    target = Path(root) / spec.folder_name()
    info = target / INFO_FILE
    if info.is_file() and json.loads(info.read_text()) == asdict(spec):
        return target
    with atomic_dir(target) as tmp:
        rows = []
        for class_name in SAMPLE_CLASSES[: spec.num_classes]:
            (tmp / class_name).mkdir()
            for i in range(spec.images_per_class):
                img, box = render_sample_image(
                    class_name, i, seed=spec.seed, image_size=spec.image_size
                )
                rel = f"{class_name}/{class_name}_{i:04d}.jpg"
                img.save(tmp / rel, format="JPEG", quality=spec.jpeg_quality)
                rows.append((rel, *box))
        with open(tmp / BOXES_FILE, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "box_x0", "box_y0", "box_x1", "box_y1"])
            writer.writerows(rows)
        (tmp / INFO_FILE).write_text(json.dumps(asdict(spec)))
    return target


def read_boxes(folder: str | Path) -> dict[str, Box]:
    """Relative path -> object box, from a generated sample folder."""
    path = Path(folder) / BOXES_FILE
    with open(path, newline="") as fh:
        return {
            r["path"]: (int(r["box_x0"]), int(r["box_y0"]), int(r["box_x1"]), int(r["box_y1"]))
            for r in csv.DictReader(fh)
        }
