"""A Food-101-shaped tree at any size, generated: the benchmarks' and the scale tests' dataset.

`make_food101_like` writes torchvision's `Food101` layout with Food-101's proportions, so
`source: food101`, `torchvision.datasets.Food101` and the scale benchmarks read it as they would
read the real 5 GB download (which these machines cannot reach):

    <root>/food-101/images/<class>/<id>.jpg
    <root>/food-101/meta/classes.txt   one class name a line (Food-101's names, sorted)
    <root>/food-101/meta/labels.txt    the human names ("Apple pie"), same order
    <root>/food-101/meta/train.txt     "<class>/<id>" a line: 3/4 of each class (750 of 1,000)
    <root>/food-101/meta/test.txt      the other 1/4 (250 of 1,000)
    <root>/food-101/meta/train.json    the same lists as {class: [...]}: what torchvision reads
    <root>/food-101/meta/test.json
    <root>/food-101/synthetic.json     the parameters; a second call with the same ones reuses it

The JPEGs have Food-101's sizes (the longer side 512): a seeded mix of landscape `image_size`
(512x384), its portrait twin (384x512) and squares (512x512). Their content is learnable: each
class has its own dish shape (the sample source's ten painters, `sample.CLASS_PAINTERS`), its
own background pattern and its own palette (hues spread by the golden ratio), drawn with random
place, scale and colour jitter, plus pixel noise. A small CNN learns it well above chance in one
epoch; nothing in it is meant to look like food photographs beyond their size and file weight.

Fast enough for 101,000 images: each image is drawn at half size, upscaled, given full-size noise
from a per-process noise bank, and JPEG-encoded by PIL, in `workers` processes. The same
parameters give the same bytes whatever the worker count: every image draws from its own
generator seeded with (seed, class, index).
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from food_assets.ml.artifacts import atomic_dir
from food_assets.ml.data.sample import CLASS_PAINTERS
from food_assets.ml.errors import ConfigError

SYNTHETIC_FORMAT_VERSION = 1
INFO_FILE = "synthetic.json"
#: Food-101's share of each class in the official train split (750 of 1,000).
TRAIN_SHARE = 0.75
#: Food-101's 101 class names, in the order of its meta/classes.txt (sorted).
FOOD101_CLASSES: tuple[str, ...] = tuple(
    sorted(
        """
    apple_pie baby_back_ribs baklava beef_carpaccio beef_tartare beet_salad beignets bibimbap
    bread_pudding breakfast_burrito bruschetta caesar_salad cannoli caprese_salad carrot_cake
    ceviche cheese_plate cheesecake chicken_curry chicken_quesadilla chicken_wings chocolate_cake
    chocolate_mousse churros clam_chowder club_sandwich crab_cakes creme_brulee croque_madame
    cup_cakes deviled_eggs donuts dumplings edamame eggs_benedict escargots falafel filet_mignon
    fish_and_chips foie_gras french_fries french_onion_soup french_toast fried_calamari fried_rice
    frozen_yogurt garlic_bread gnocchi greek_salad grilled_cheese_sandwich grilled_salmon
    guacamole gyoza hamburger hot_and_sour_soup hot_dog huevos_rancheros hummus ice_cream lasagna
    lobster_bisque lobster_roll_sandwich macaroni_and_cheese macarons miso_soup mussels nachos
    omelette onion_rings oysters pad_thai paella pancakes panna_cotta peking_duck pho pizza
    pork_chop poutine prime_rib pulled_pork_sandwich ramen ravioli red_velvet_cake risotto samosa
    sashimi scallops seaweed_salad shrimp_and_grits spaghetti_bolognese spaghetti_carbonara
    spring_rolls steak strawberry_shortcake sushi tacos takoyaki tiramisu tuna_tartare waffles
    """.split()
    )
)
_PAINTERS = tuple(CLASS_PAINTERS.values())
_NOISE_MARGIN = 64
_noise_bank: dict[tuple[int, int], np.ndarray] = {}  # per process: (seed, side) -> noise


def _hue_rgb(hue: float, sat: float, val: float) -> np.ndarray:
    """HSV (each in [0, 1]) to an RGB float triple in [0, 255]."""
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    return 255.0 * val * (1.0 - sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))


def _class_style(class_idx: int) -> tuple[int, np.ndarray, np.ndarray, float]:
    """Background pattern kind, two palette colours and a stripe frequency, fixed per class.

    Hues step by the golden ratio, so any two classes' palettes differ; classes that share a
    painter (`class_idx % 10`) also differ in pattern (`class_idx // 10 % 4`).
    """
    hue = (class_idx * 0.618034) % 1.0
    a = _hue_rgb(hue, 0.55, 0.85)
    b = _hue_rgb((hue + 0.5) % 1.0, 0.35, 0.55)
    return (class_idx // 10) % 4, a, b, 6.0 + 3.0 * (class_idx % 7)


def _noise(seed: int, h: int, w: int, rng: np.random.Generator) -> Image.Image:
    """A full-size noise patch (values 0..28), cut at a random offset from a seeded bank."""
    side = max(h, w) + _NOISE_MARGIN
    bank = _noise_bank.get((seed, side))
    if bank is None:
        values = np.random.default_rng([seed, side]).integers(0, 29, size=(side, side, 3))
        bank = _noise_bank[(seed, side)] = Image.fromarray(values.astype(np.uint8), mode="RGB")
    dx, dy = (int(v) for v in rng.integers(0, _NOISE_MARGIN, size=2))
    return bank.crop((dx, dy, dx + w, dy + h))


def render_food101_like_image(
    class_idx: int, index: int, *, seed: int = 0, size: tuple[int, int] = (512, 384)
) -> Image.Image:
    """Draw image `index` of class `class_idx` at `size` (width, height)."""
    rng = np.random.default_rng([seed, class_idx, index])
    kind, a, b, freq = _class_style(class_idx)
    w, h = size
    # The smooth background is computed at a quarter of the size and upscaled: most of the cost
    # of an image is per pixel, and this keeps 101,000 of them to minutes.
    sw, sh = max(8, w // 4), max(8, h // 4)
    a = (a + rng.integers(-25, 26, size=3)).astype(np.float32)
    b = (b + rng.integers(-25, 26, size=3)).astype(np.float32)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32) / max(sw, sh)
    angle = rng.uniform(0, math.pi)
    along = np.cos(angle) * xx + np.sin(angle) * yy
    if kind == 0:  # linear gradient
        t = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    elif kind == 1:  # table-cloth checks
        cells = freq / 2
        t = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2) * 0.7
    elif kind == 2:  # stripes
        t = (np.sin(along * freq * math.pi) + 1) / 2
    else:  # rings
        r = np.hypot(xx - rng.uniform(0, 1), yy - rng.uniform(0, 1))
        t = (np.cos(r * freq * math.pi) + 1) / 2
    canvas = a * (1 - t[..., None]) + b * t[..., None]
    small = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), mode="RGB")
    img = small.resize((w, h), Image.Resampling.BILINEAR)

    side = int(min(w, h) * rng.uniform(0.45, 0.8))
    aspect = rng.uniform(0.8, 1.25)
    ow = min(w - 2, max(8, int(side * aspect)))
    oh = min(h - 2, max(8, int(side / aspect)))
    x0, y0 = int(rng.integers(1, w - ow)), int(rng.integers(1, h - oh))
    layer = Image.new("RGBA", (ow + 2, oh + 2), (0, 0, 0, 0))  # only the dish's box
    local = (1, 1, ow + 1, oh + 1)
    _PAINTERS[class_idx % len(_PAINTERS)](ImageDraw.Draw(layer), local, rng)
    img.paste(layer, (x0 - 1, y0 - 1), layer)
    # Pixel noise, as a photo has: img + noise - 14, clipped, in C.
    return ImageChops.add(img, _noise(seed, h, w, rng), scale=1.0, offset=-14)


def _image_size(rng: np.random.Generator, landscape: tuple[int, int]) -> tuple[int, int]:
    # Food-101's photos are rescaled to a longer side of 512: mostly landscape, some portrait,
    # some square.
    w, h = landscape
    return (w, h) if (u := rng.uniform()) < 0.6 else (h, w) if u < 0.85 else (max(w, h),) * 2


def _write_images(args: tuple[Path, int, int, list[int], int, tuple[int, int], int]) -> int:
    """Worker: render and save images `start...` of one class as `<id>.jpg`; returns the count."""
    folder, class_idx, start, ids, seed, landscape, quality = args
    folder.mkdir(parents=True, exist_ok=True)
    for k, image_id in enumerate(ids):
        i = start + k
        size = _image_size(np.random.default_rng([seed, class_idx, i, 1]), landscape)
        img = render_food101_like_image(class_idx, i, seed=seed, size=size)
        img.save(folder / f"{image_id}.jpg", format="JPEG", quality=quality)
    return len(ids)


def _run_jobs(
    jobs: list[tuple[Path, int, int, list[int]]],
    seed: int,
    landscape: tuple[int, int],
    quality: int,
    workers: int | None,
) -> int:
    tasks = [(*job, seed, landscape, quality) for job in jobs]
    workers = max(1, workers or os.cpu_count() or 1)
    if workers == 1:
        return sum(map(_write_images, tasks))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(_write_images, tasks))


def _chunks(n: int, parts: int) -> list[range]:
    step = max(1, math.ceil(n / parts))
    return [range(s, min(n, s + step)) for s in range(0, n, step)]


def make_food101_like(
    root: str | os.PathLike[str],
    *,
    classes: int = 101,
    per_class: int = 1000,
    image_size: tuple[int, int] = (512, 384),
    workers: int | None = None,
    seed: int = 0,
    quality: int = 85,
) -> Path:
    """Generate a Food-101-shaped tree under `root/food-101` unless the same one is there.

    Args:
        root: the folder that will hold `food-101/` (what `source: food101`'s `root` and
            `torchvision.datasets.Food101(root)` take).
        classes: how many classes, 1 to 101: the first `classes` of Food-101's sorted names.
        per_class: images per class; `round(per_class * 0.75)` go to meta/train.txt, the rest
            to meta/test.txt (Food-101: 750 and 250 of 1,000).
        image_size: the landscape size `(width, height)`; about 60 % of images have it, 25 %
            its portrait twin and 15 % are squares of its longer side.
        workers: generating processes; None: every CPU.
        seed: drives all content; the same arguments give the same bytes.
        quality: JPEG quality (Food-101's files average about 50 KB at 512x384).

    Returns:
        The `food-101` folder.

    Raises:
        ConfigError: `classes` outside 1..101, `per_class` under 2, or a side under 32 px.
    """
    if not 1 <= classes <= len(FOOD101_CLASSES):
        raise ConfigError(f"classes must be 1..{len(FOOD101_CLASSES)} (got {classes})")
    if per_class < 2:
        raise ConfigError("per_class must be >= 2 so each class has train and test images")
    if min(image_size) < 32:
        raise ConfigError(f"image_size {image_size} is too small: each side must be >= 32 px")
    target = Path(root) / "food-101"
    info = {
        "version": SYNTHETIC_FORMAT_VERSION, "classes": classes, "per_class": per_class,
        "image_size": list(image_size), "seed": seed, "quality": quality,
    }  # fmt: skip
    info_path = target / INFO_FILE
    if info_path.is_file() and json.loads(info_path.read_text()) == info:
        return target
    names = FOOD101_CLASSES[:classes]
    n_train = min(per_class - 1, max(1, round(per_class * TRAIN_SHARE)))
    with atomic_dir(target) as tmp:
        splits: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
        jobs = []
        for c, name in enumerate(names):
            # Food-101's ids are numbers, unique across the set; train and test interleave.
            ids = [c * per_class + i + 100_000 for i in range(per_class)]
            order = np.random.default_rng([seed, c, 2]).permutation(per_class)
            train = set(order[:n_train].tolist())
            splits["train"][name] = [f"{name}/{ids[i]}" for i in range(per_class) if i in train]
            splits["test"][name] = [f"{name}/{ids[i]}" for i in range(per_class) if i not in train]
            for part in _chunks(per_class, 4):
                sub = [ids[i] for i in part]
                jobs.append((tmp / "images" / name, c, part.start, sub))
        _run_jobs(jobs, seed, tuple(image_size), quality, workers)
        meta = tmp / "meta"
        meta.mkdir()
        (meta / "classes.txt").write_text("".join(f"{n}\n" for n in names))
        labels = "".join(f"{n.replace('_', ' ').capitalize()}\n" for n in names)
        (meta / "labels.txt").write_text(labels)
        for split, lists in splits.items():
            (meta / f"{split}.txt").write_text("".join(f"{r}\n" for v in lists.values() for r in v))
            (meta / f"{split}.json").write_text(json.dumps(lists))
        (tmp / INFO_FILE).write_text(json.dumps(info))
    return target
