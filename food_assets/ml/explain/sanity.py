"""Is a Grad-CAM map about the object? Two checks that need no human looking at galleries.

- Pointing game: the share of images whose CAM peak falls inside the object box. A map that
  ignores the image scores about the box's share of the image (the random baseline); a map that
  follows the object scores well above it.
- Deletion: hide the region the CAM ranks highest and see how much the predicted class's
  probability falls, against hiding a region of the same shape at a random place. If the model
  relies on what the CAM shows, the CAM deletion hurts more.

Pure functions: arrays in, numbers out (the deletion test runs the model, nothing else).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from food_assets.ml.data.transforms import Preprocess

Box = tuple[float, float, float, float]


def map_box_to_input(box: Sequence[float], orig_w: int, orig_h: int, pre: Preprocess) -> Box:
    """Map a box from original pixel coords to model-input coords under the eval transform.

    The eval transform (`build_transform(pre, train=False)`) resizes the shorter side to
    `pre.resize_size` (torchvision truncates the longer side to an int), then centre crops
    `pre.input_size`; this repeats that arithmetic so boxes and CAMs share one frame.

    Args:
        box: `(x0, y0, x1, y1)` in original pixels, continuous coords (x1, y1 exclusive).
        orig_w: original image width.
        orig_h: original image height.
        pre: the model's preprocessing.

    Returns:
        `(x0, y0, x1, y1)` in input pixels, clipped to `[0, input_size]`; a box that falls wholly
        outside the crop comes back empty (x0 == x1 or y0 == y1). NaN in, NaN out.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    size = pre.resize_size
    # torchvision's Resize(int): the short side becomes `size`, the long one int(size * long/short).
    if orig_w <= orig_h:
        new_w, new_h = size, int(size * orig_h / orig_w)
    else:
        new_w, new_h = int(size * orig_w / orig_h), size
    sx, sy = new_w / orig_w, new_h / orig_h
    crop = pre.input_size
    left, top = _crop_offset(new_w, crop), _crop_offset(new_h, crop)
    mapped = (x0 * sx - left, y0 * sy - top, x1 * sx - left, y1 * sy - top)
    lo, hi = 0.0, float(crop)
    cx0, cy0, cx1, cy1 = (min(max(v, lo), hi) for v in mapped)
    return (cx0, cy0, max(cx0, cx1), max(cy0, cy1))


def _crop_offset(length: int, crop: int) -> float:
    # torchvision's CenterCrop: round((L - crop) / 2) when the image is larger; when smaller it
    # pads (crop - L) // 2 on the leading side, i.e. a negative offset.
    if length >= crop:
        return float(int(round((length - crop) / 2.0)))
    return -float((crop - length) // 2)


def _inside(ys: np.ndarray, xs: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    # Pixel (y, x) covers [x, x+1); it counts as inside when its centre is in the box.
    cx, cy = xs + 0.5, ys + 0.5
    return (cx >= boxes[:, 0]) & (cx <= boxes[:, 2]) & (cy >= boxes[:, 1]) & (cy <= boxes[:, 3])


def _valid(boxes: np.ndarray) -> np.ndarray:
    return (
        np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    )


def cam_peaks(cams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each CAM's maximum (the first one on ties)."""
    n, h, w = cams.shape
    flat = cams.reshape(n, -1).argmax(axis=1)
    return flat // w, flat % w


def pointing_hits(cams: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per image: 1.0 when the CAM peak lies inside the object box, 0.0 when not, NaN when the
    box is NaN or empty. Image by image, so a caller can score CAMs a batch at a time."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) != len(cams):
        raise ValueError(f"{len(cams)} CAMs but {len(boxes)} boxes")
    hits = np.full(len(boxes), np.nan)
    keep = _valid(boxes)
    if keep.any():
        ys, xs = cam_peaks(np.asarray(cams)[keep])
        hits[keep] = _inside(ys, xs, boxes[keep])
    return hits


def pointing_game(cams: np.ndarray, boxes: np.ndarray) -> float:
    """Share of images whose CAM peak lies inside the object box.

    Args:
        cams: `(N, H, W)` maps in input coords.
        boxes: `(N, 4)` boxes in the same coords (see `map_box_to_input`); rows with NaN or an
            empty box are left out.

    Returns:
        Hit rate in [0, 1]; NaN when no image has a usable box.
    """
    return _nanmean(pointing_hits(cams, boxes))


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def pointing_baseline(boxes: np.ndarray, height: int, width: int) -> float:
    """Expected pointing-game score of a peak placed uniformly at random: the mean box share.

    Counted in pixel centres, exactly as `pointing_game` counts a hit.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    boxes = boxes[_valid(boxes)]
    if not len(boxes):
        return float("nan")
    centres_x = np.arange(width) + 0.5
    centres_y = np.arange(height) + 0.5
    nx = ((centres_x[None, :] >= boxes[:, :1]) & (centres_x[None, :] <= boxes[:, 2:3])).sum(1)
    ny = ((centres_y[None, :] >= boxes[:, 1:2]) & (centres_y[None, :] <= boxes[:, 3:4])).sum(1)
    return float((nx * ny / (height * width)).mean())


def random_pointing_game(
    boxes: np.ndarray, height: int, width: int, *, trials: int = 20, seed: int = 0
) -> float:
    """Empirical pointing-game score of uniform-noise maps (mean over `trials` draws)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    boxes = boxes[_valid(boxes)]
    if not len(boxes):
        return float("nan")
    rng = np.random.default_rng(seed)
    flat = rng.integers(0, height * width, size=(trials, len(boxes)))
    hits = [_inside(f // width, f % width, boxes).mean() for f in flat]
    return float(np.mean(hits))


def top_fraction_mask(cams: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean `(N, H, W)` masks of each map's top `fraction` pixels (exactly k per image)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1); got {fraction}")
    n, h, w = cams.shape
    k = max(1, int(round(fraction * h * w)))
    # A stable sort on the negated map keeps ties in raster order, so the mask is reproducible.
    order = np.argsort(-cams.reshape(n, -1), axis=1, kind="stable")[:, :k]
    mask = np.zeros((n, h * w), dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask.reshape(n, h, w)


def _fill(images: torch.Tensor, how: str) -> torch.Tensor:
    if how == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    if how == "blur":
        from torchvision.transforms.functional import gaussian_blur

        side = images.shape[-1]
        k = max(3, (side // 8) | 1)  # odd kernel about an eighth of the image: removes detail
        return gaussian_blur(images, [k, k], [k / 3.0, k / 3.0])
    raise ValueError(f"unknown fill {how!r}; use 'mean' or 'blur'")


def _shifted_masks(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each mask moved by a random cyclic shift: same pixel count and shape, another place."""
    h, w = mask.shape[1:]
    return np.stack(
        [np.roll(m, (int(rng.integers(h)), int(rng.integers(w))), axis=(0, 1)) for m in mask]
    )


def _probability_drops(
    model: nn.Module,
    images: torch.Tensor,
    masks: tuple[np.ndarray, np.ndarray],
    targets: Sequence[int],
    *,
    fill: str,
    temperature: float,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per image, how much the target's probability falls when each mask's pixels are filled.

    The model runs in eval mode and gets its train/eval mode back afterwards, also on error.
    """
    mask_cam, mask_rand = masks
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    tgt = torch.as_tensor(list(targets), dtype=torch.long)

    def probs(x: torch.Tensor, idx: slice) -> torch.Tensor:
        logits = model(x.to(device)).float().cpu() / temperature
        return logits.softmax(dim=1).gather(1, tgt[idx, None]).squeeze(1)

    drops_cam, drops_rand = [], []
    try:
        for start in range(0, len(images), batch_size):
            idx = slice(start, start + batch_size)
            x = images[idx].detach().float().cpu()
            filled = _fill(x, fill)
            m_cam = torch.from_numpy(mask_cam[idx])[:, None]
            m_rand = torch.from_numpy(mask_rand[idx])[:, None]
            p0 = probs(x, idx)
            drops_cam.append(p0 - probs(torch.where(m_cam, filled, x), idx))
            drops_rand.append(p0 - probs(torch.where(m_rand, filled, x), idx))
    finally:
        model.train(was_training)
    return torch.cat(drops_cam).numpy(), torch.cat(drops_rand).numpy()


@torch.no_grad()
def deletion_drops(
    model: nn.Module,
    images: torch.Tensor,
    cams: np.ndarray,
    targets: Sequence[int],
    *,
    rng: np.random.Generator,
    fraction: float = 0.2,
    fill: str = "mean",
    temperature: float = 1.0,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the target's probability drop with its top-CAM region hidden, and with the
    same region moved by a random cyclic shift (drawn from `rng`, two integers per image).

    Image by image: calling it on consecutive batches with one generator gives what one call on
    all of them gives, so the Grad-CAM report can run it a batch at a time. See
    `deletion_test` for the arguments.
    """
    n = len(images)
    if n == 0:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)
    if cams.shape[0] != n or cams.shape[1:] != tuple(images.shape[2:]):
        raise ValueError(f"CAMs {cams.shape} do not match images {tuple(images.shape)}")
    mask = top_fraction_mask(np.asarray(cams), fraction)
    return _probability_drops(
        model,
        images,
        (mask, _shifted_masks(mask, rng)),
        targets,
        fill=fill,
        temperature=temperature,
        batch_size=batch_size,
    )


def deletion_summary(drops_cam: np.ndarray, drops_random: np.ndarray) -> dict[str, float]:
    """`cam_drop`, `random_drop`, `gap`, `win_rate` and `n` of per-image drops (NaN when none)."""
    dc, dr = np.asarray(drops_cam, dtype=np.float64), np.asarray(drops_random, dtype=np.float64)
    if len(dc) == 0:
        nan = float("nan")
        return {"cam_drop": nan, "random_drop": nan, "gap": nan, "win_rate": nan, "n": 0.0}
    return {
        "cam_drop": float(dc.mean()),
        "random_drop": float(dr.mean()),
        "gap": float(dc.mean() - dr.mean()),
        "win_rate": float((dc > dr).mean()),
        "n": float(len(dc)),
    }


def deletion_test(
    model: nn.Module,
    images: torch.Tensor,
    cams: np.ndarray,
    targets: Sequence[int],
    *,
    fraction: float = 0.2,
    fill: str = "mean",
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, float]:
    """Probability drop of the target class when the top-CAM region is hidden vs a random one.

    The random region is the CAM mask itself moved by a random cyclic shift, so both deletions
    hide the same number of pixels in a region of the same shape; only its place differs.

    Args:
        model: returns logits for normalised images.
        images: `(N, 3, H, W)` normalised inputs (the ones the CAMs were computed on).
        cams: `(N, H, W)` maps.
        targets: class index per image (usually the predicted class).
        fraction: share of pixels hidden.
        fill: `mean` (per-channel image mean) or `blur` (a strong Gaussian blur of the image).
        temperature: divides the logits before the softmax (the model card's calibration).
        seed: for the random shifts.
        batch_size: images per forward pass.

    Returns:
        `cam_drop` and `random_drop` (mean probability drop), `gap` (their difference),
        `win_rate` (share of images where the CAM deletion hurt more) and `n`.
    """
    dc, dr = deletion_drops(
        model, images, cams, targets, rng=np.random.default_rng(seed), fraction=fraction,
        fill=fill, temperature=temperature, batch_size=batch_size,
    )  # fmt: skip
    return deletion_summary(dc, dr)
