"""Grad-CAM galleries and sanity figures for one trained model.

CAMs come from the grad-cam library (`pytorch_grad_cam.GradCAM`), constructed once per call and
run batch by batch; its hooks are released when the call ends, even on error. The target layer
and the ViT token reshape come from the model's registry entry (`ModelSpec.cam_layer`,
`ModelSpec.cam_reshape`), so no model is special-cased here.

`build_gradcam_report` writes, into one folder swapped in atomically:

    correct.png    most confident correct predictions
    wrong.png      most confident wrong predictions
    per_class.png  one row per chosen class, `per_class` images each
    tiles.parquet  per gallery and tile: image path, true/pred class, confidence, box in the PNG
    gradcam.json   metrics, gallery files, settings
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from food_assets.ml.artifacts import atomic_dir, write_image
from food_assets.ml.data.transforms import ImagePipeline, Preprocess, denormalize
from food_assets.ml.errors import ConfigError
from food_assets.ml.explain.sanity import (
    deletion_test,
    map_box_to_input,
    pointing_baseline,
    pointing_game,
    random_pointing_game,
)
from food_assets.ml.models.bundle import ModelCard
from food_assets.ml.models.registry import resolve_cam_layer

GALLERIES = ("correct", "wrong", "per_class")
TILES_FILE = "tiles.parquet"
MANIFEST_FILE = "gradcam.json"
BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")

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


@dataclass
class GradcamResult:
    """What `build_gradcam_report` wrote and measured.

    Attributes:
        out_dir: the report folder.
        galleries: gallery name (`correct`, `wrong`, `per_class`) -> PNG path.
        tiles: one row per tile: `gallery, position, row, col, path, true_class, true_idx,
            pred_class, pred_idx, confidence, correct, tile_x0, tile_y0, tile_x1, tile_y1`.
        tiles_path: `tiles.parquet`.
        manifest_path: `gradcam.json` (metrics, galleries, settings).
        metrics: `gradcam/pointing_game`, `gradcam/pointing_random_expected`,
            `gradcam/pointing_random_empirical`, `gradcam/pointing_n`,
            `gradcam/deletion_cam_drop`, `gradcam/deletion_random_drop`, `gradcam/deletion_gap`,
            `gradcam/deletion_win_rate`, `gradcam/deletion_n`, `gradcam/accuracy_pool`,
            `gradcam/n_pool` (NaN where a figure could not be computed, e.g. no boxes).
    """

    out_dir: Path
    galleries: dict[str, Path]
    tiles: pd.DataFrame
    tiles_path: Path
    manifest_path: Path
    metrics: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def open_gradcam(
    model: nn.Module, target_layer: nn.Module, reshape: Callable | None = None
) -> Iterator[Any]:
    """A `pytorch_grad_cam.GradCAM` whose hooks are removed when the block ends.

    The library's own `__exit__` swallows `IndexError` (it prints and returns True), which would
    hide real bugs here; this releases the hooks in a `finally` instead.
    """
    from pytorch_grad_cam import GradCAM

    cam = GradCAM(model=model, target_layers=[target_layer], reshape_transform=reshape)
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()


def compute_cams(
    model: nn.Module,
    target_layer: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int] | None = None,
    reshape: Callable | None = None,
    *,
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM maps for a batch of normalised images.

    Args:
        model: returns logits; put in eval mode (the library does it) and left there.
        target_layer: the module whose activations are weighted (`resolve_cam_layer`).
        images: `(N, 3, H, W)` normalised inputs.
        targets: class index per image; None explains each image's predicted class.
        reshape: ViT tokens -> `(N, C, h, w)` (the registry's `cam_reshape`).
        batch_size: images per forward/backward pass.

    Returns:
        `(N, H, W)` float32 maps in [0, 1], each scaled to its own maximum.
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    n = len(images)
    if targets is not None and len(targets) != n:
        raise ValueError(f"{n} images but {len(targets)} targets")
    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    # Grad-CAM needs gradients even when the caller is in no_grad or inference_mode, and even when
    # the backbone is frozen (feature-extract mode): an input that requires grad makes the
    # activations require it. The clone turns a possible inference tensor into a normal one.
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        open_gradcam(model, target_layer, reshape) as cam,
    ):
        for start in range(0, n, batch_size):
            x = images[start : start + batch_size].detach().to(device).float().clone()
            x.requires_grad_(True)
            tgt = None
            if targets is not None:
                tgt = [ClassifierOutputTarget(int(t)) for t in targets[start : start + batch_size]]
            out.append(np.asarray(cam(input_tensor=x, targets=tgt), dtype=np.float32))
    if not out:
        h, w = images.shape[-2:]
        return np.zeros((0, h, w), dtype=np.float32)
    return np.clip(np.concatenate(out), 0.0, 1.0)


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


# --------------------------------------------------------------------------------------------
# The report


@torch.no_grad()
def _predict_probs(
    model: nn.Module, pipeline: ImagePipeline, paths: Sequence[str], temperature: float, bs: int
) -> np.ndarray:
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(paths), bs):
        x = torch.stack([pipeline(p) for p in paths[start : start + bs]]).to(device)
        out.append((model(x).float() / temperature).softmax(dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _class_indices(frame: pd.DataFrame, class_names: Sequence[str]) -> np.ndarray:
    # Map by name, not by the manifest's label_idx: the model's class order is the card's.
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted(set(frame["label"]) - index.keys())
    if unknown:
        raise ConfigError(
            f"the manifest has classes the model does not know: {unknown[:5]}; evaluate the model "
            "on the split manifest it was trained with"
        )
    return frame["label"].map(index).to_numpy(dtype=np.int64)


def _pick_classes(pool: pd.DataFrame, classes: Sequence[str] | None, k: int) -> list[str]:
    if classes is not None:
        missing = sorted(set(classes) - set(pool["true_class"]))
        if missing:
            raise ConfigError(f"no images of class(es) {missing} in the Grad-CAM pool")
        return list(classes)
    # Default: the classes the model gets most wrong in the pool, as those are worth looking at.
    acc = pool.groupby("true_class")["correct"].mean().reset_index()
    acc = acc.sort_values(["correct", "true_class"], kind="stable")
    return acc["true_class"].head(k).tolist()


def build_gradcam_report(
    model: nn.Module,
    card: ModelCard,
    cam_layer: str,
    cam_reshape: Callable | None,
    frame: pd.DataFrame,
    out_dir: str | Path,
    *,
    n_per_gallery: int = 16,
    classes: Sequence[str] | None = None,
    per_class: int = 4,
    n_classes: int = 4,
    seed: int = 0,
    max_images: int | None = 1000,
    n_sanity: int = 64,
    deletion_fraction: float = 0.2,
    deletion_fill: str = "mean",
    probs: np.ndarray | None = None,
    batch_size: int = 32,
    columns: int = 4,
) -> GradcamResult:
    """Galleries of right and wrong predictions with Grad-CAM overlays, plus sanity figures.

    Args:
        model: the trained network (e.g. from `load_bundle`); left in eval mode.
        card: its model card (class names, preprocessing, temperature).
        cam_layer: `ModelSpec.cam_layer`.
        cam_reshape: `ModelSpec.cam_reshape` (ViT), else None.
        frame: split-manifest rows (`path`, `label`; `width`, `height` and `box_*` for the
            pointing game).
        out_dir: report folder, replaced atomically.
        n_per_gallery: tiles in the `correct` and `wrong` galleries.
        classes: classes for the per-class gallery; None picks the `n_classes` classes with the
            lowest accuracy in the pool.
        per_class: tiles per class in the per-class gallery (one row each).
        n_classes: how many classes to pick when `classes` is None.
        seed: drives every sampling choice.
        max_images: pool size: a seeded sample of the frame when it has more rows (predicting
            25k Food-101 test images on a CPU just for a gallery is not worth it). None: all.
        n_sanity: images (seeded sample of the pool) for the pointing game and deletion test.
        deletion_fraction: share of pixels hidden in the deletion test.
        deletion_fill: `mean` or `blur` (see `deletion_test`).
        probs: `(len(frame), C)` calibrated probabilities already computed for `frame` (for
            example by the evaluation asset); skips the prediction pass.
        batch_size: images per forward pass.
        columns: tiles per gallery row for `correct` / `wrong`.
    """
    if not cam_layer:
        raise ConfigError(f"model {card.name!r} has no Grad-CAM layer (cam_layer is None)")
    if frame.empty:
        raise ConfigError("the Grad-CAM frame has no rows; pass a non-empty split")
    pre: Preprocess = card.preprocess
    pipeline = ImagePipeline(pre, train=False)
    rng = np.random.default_rng(seed)
    frame = frame.reset_index(drop=True)
    if probs is not None and len(probs) != len(frame):
        raise ValueError(f"probs has {len(probs)} rows but the frame has {len(frame)}")
    if max_images is not None and len(frame) > max_images:
        keep = np.sort(rng.choice(len(frame), size=max_images, replace=False))
        frame = frame.iloc[keep].reset_index(drop=True)
        probs = probs[keep] if probs is not None else None

    true_idx = _class_indices(frame, card.class_names)
    paths = frame["path"].astype(str).tolist()
    was_training = model.training
    model.eval()
    try:
        if probs is None:
            probs = _predict_probs(model, pipeline, paths, card.temperature, batch_size)
        pred_idx = probs.argmax(axis=1)
        names = np.asarray(card.class_names, dtype=object)
        pool = pd.DataFrame(
            {
                "path": paths,
                "true_idx": true_idx,
                "true_class": names[true_idx],
                "pred_idx": pred_idx,
                "pred_class": names[pred_idx],
                "confidence": probs[np.arange(len(probs)), pred_idx].astype(float),
            }
        )
        pool["correct"] = pool["true_idx"] == pool["pred_idx"]
        layer = resolve_cam_layer(model, cam_layer)

        # Most confident first; ties broken by path so the galleries are reproducible.
        by_conf = pool.sort_values(["confidence", "path"], ascending=[False, True], kind="stable")
        picks = {
            "correct": by_conf[by_conf["correct"]].head(n_per_gallery).index.tolist(),
            "wrong": by_conf[~by_conf["correct"]].head(n_per_gallery).index.tolist(),
        }
        chosen = _pick_classes(pool, classes, n_classes)
        per_class_idx: list[int] = []
        for c in chosen:
            members = pool.index[pool["true_class"] == c].to_numpy()
            take = rng.choice(members, size=min(per_class, len(members)), replace=False)
            per_class_idx.extend(sorted(take.tolist(), key=lambda i: paths[i]))
        picks["per_class"] = per_class_idx
        sanity_idx = np.sort(rng.choice(len(pool), size=min(n_sanity, len(pool)), replace=False))

        # One CAM pass over every image any part of the report needs.
        needed = sorted(set().union(*picks.values(), sanity_idx.tolist()))
        images = torch.stack([pipeline(paths[i]) for i in needed])
        cams_all = compute_cams(
            model, layer, images, pred_idx[needed].tolist(), cam_reshape, batch_size=batch_size
        )
        pos = {i: k for k, i in enumerate(needed)}
        rgb = denormalize(images, pre).permute(0, 2, 3, 1).numpy().astype(np.float32)

        metrics = _sanity_metrics(
            model, card, frame, images, cams_all, pred_idx, sanity_idx, pos,
            fraction=deletion_fraction, fill=deletion_fill, seed=seed, batch_size=batch_size,
        )  # fmt: skip
    finally:
        model.train(was_training)
    metrics["gradcam/accuracy_pool"] = float(pool["correct"].mean())
    metrics["gradcam/n_pool"] = float(len(pool))

    h, w = rgb.shape[1:3]
    gallery_columns = {"correct": columns, "wrong": columns, "per_class": max(1, per_class)}
    rows: list[dict[str, Any]] = []
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        galleries: dict[str, Path] = {}
        for name in GALLERIES:
            idx = picks[name]
            tiles = [
                GradcamTile(
                    image=rgb[pos[i]],
                    cam=cams_all[pos[i]],
                    true_class=str(pool.at[i, "true_class"]),
                    pred_class=str(pool.at[i, "pred_class"]),
                    confidence=float(pool.at[i, "confidence"]),
                    path=paths[i],
                )
                for i in idx
            ]
            cols = gallery_columns[name]
            if name == "per_class":
                tiles, idx = _rows_per_class(tiles, idx, chosen, cols)
            empty = f"no {name.replace('_', ' ')} predictions" if name != "per_class" else None
            render_gallery(tiles, tmp / f"{name}.png", columns=cols, title=empty)
            galleries[name] = out_dir / f"{name}.png"
            for k, (i, box) in enumerate(zip(idx, tile_boxes(len(idx), w, h, cols), strict=True)):
                if i is None:  # padding in the per-class grid
                    continue
                rows.append(
                    {
                        "gallery": name,
                        "position": k,
                        "row": k // cols,
                        "col": k % cols,
                        **pool.loc[i, ["path", "true_class", "true_idx", "pred_class",
                                       "pred_idx", "confidence", "correct"]].to_dict(),
                        "tile_x0": box[0], "tile_y0": box[1], "tile_x1": box[2], "tile_y1": box[3],
                    }
                )  # fmt: skip
        tiles_df = pd.DataFrame(rows, columns=_TILE_COLUMNS)
        tiles_df = tiles_df.astype({"true_idx": "int64", "pred_idx": "int64", "correct": bool})
        tiles_df.to_parquet(tmp / TILES_FILE, index=False)
        manifest = {
            "model": card.name,
            "cam_layer": cam_layer,
            "target": "predicted class",
            "metrics": metrics,
            "galleries": {k: v.name for k, v in galleries.items()},
            "classes": chosen,
            "tiles": {g: int((tiles_df["gallery"] == g).sum()) for g in GALLERIES},
            "settings": {
                "n_per_gallery": n_per_gallery, "per_class": per_class, "seed": seed,
                "max_images": max_images, "n_sanity": n_sanity,
                "deletion_fraction": deletion_fraction, "deletion_fill": deletion_fill,
                "input_size": pre.input_size,
            },
        }  # fmt: skip
        (tmp / MANIFEST_FILE).write_text(json.dumps(_no_nan(manifest), indent=2) + "\n")
    return GradcamResult(
        out_dir=out_dir,
        galleries=galleries,
        tiles=tiles_df,
        tiles_path=out_dir / TILES_FILE,
        manifest_path=out_dir / MANIFEST_FILE,
        metrics=metrics,
    )


_TILE_COLUMNS = [
    "gallery", "position", "row", "col", "path", "true_class", "true_idx", "pred_class",
    "pred_idx", "confidence", "correct", "tile_x0", "tile_y0", "tile_x1", "tile_y1",
]  # fmt: skip


def _no_nan(obj: Any) -> Any:
    # JSON has no NaN; a figure that could not be computed is null.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj


def _rows_per_class(
    tiles: list[GradcamTile], idx: list[int], chosen: list[str], cols: int
) -> tuple[list[GradcamTile], list[int | None]]:
    # One row per class: pad short classes with blank tiles so the next class starts a new row.
    blank = None
    out_t: list[GradcamTile] = []
    out_i: list[int | None] = []
    for c in chosen:
        members = [(t, i) for t, i in zip(tiles, idx, strict=True) if t.true_class == c]
        for t, i in members:
            out_t.append(t)
            out_i.append(i)
        if members and len(members) < cols:
            if blank is None:
                ref = members[0][0]
                blank = GradcamTile(
                    image=np.ones_like(ref.image), cam=np.zeros_like(ref.cam),
                    true_class="", pred_class="", confidence=float("nan"),
                )  # fmt: skip
            out_t.extend([blank] * (cols - len(members)))
            out_i.extend([None] * (cols - len(members)))
    return out_t, out_i


def _sanity_metrics(
    model: nn.Module,
    card: ModelCard,
    frame: pd.DataFrame,
    images: torch.Tensor,
    cams_all: np.ndarray,
    pred_idx: np.ndarray,
    sanity_idx: np.ndarray,
    pos: dict[int, int],
    *,
    fraction: float,
    fill: str,
    seed: int,
    batch_size: int,
) -> dict[str, float]:
    pre = card.preprocess
    sel = [pos[int(i)] for i in sanity_idx]
    cams = cams_all[sel]
    size = pre.input_size
    boxes = np.full((len(sanity_idx), 4), np.nan)
    if set(BOX_COLUMNS) <= set(frame.columns) and {"width", "height"} <= set(frame.columns):
        for k, i in enumerate(sanity_idx):
            row = frame.iloc[int(i)]
            box = [row[c] for c in BOX_COLUMNS]
            if np.all(np.isfinite(np.asarray(box, dtype=float))):
                boxes[k] = map_box_to_input(box, int(row["width"]), int(row["height"]), pre)
    n_boxes = int(np.isfinite(boxes).all(axis=1).sum())
    deletion = deletion_test(
        model, images[sel], cams, pred_idx[sanity_idx].tolist(), fraction=fraction, fill=fill,
        temperature=card.temperature, seed=seed, batch_size=batch_size,
    )  # fmt: skip
    return {
        "gradcam/pointing_game": pointing_game(cams, boxes),
        "gradcam/pointing_random_expected": pointing_baseline(boxes, size, size),
        "gradcam/pointing_random_empirical": random_pointing_game(boxes, size, size, seed=seed),
        "gradcam/pointing_n": float(n_boxes),
        "gradcam/deletion_cam_drop": deletion["cam_drop"],
        "gradcam/deletion_random_drop": deletion["random_drop"],
        "gradcam/deletion_gap": deletion["gap"],
        "gradcam/deletion_win_rate": deletion["win_rate"],
        "gradcam/deletion_n": deletion["n"],
    }
