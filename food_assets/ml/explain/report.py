"""The Grad-CAM report of one trained model: galleries of right and wrong predictions with their
CAMs, and sanity figures that say whether the CAMs are about the object.

`build_gradcam_report` writes, into one folder swapped in atomically:

    correct.png    most confident correct predictions
    wrong.png      most confident wrong predictions
    per_class.png  one row per chosen class, `per_class` images each
    tiles.parquet  per gallery and tile: image path, true/pred class, confidence, box in the PNG
    gradcam.json   metrics, gallery files, settings

Its steps, one function each: sample and predict the pool and pick the gallery and sanity images
(`sampling.py`), one CAM pass over them that streams in batches and keeps only the gallery tiles
and per-image sanity figures (`_cam_pass`), the sanity summary (`_sanity_metrics`), then the
files (`_write_report`). Memory is bounded by the galleries' size, not by the pool or the split.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from food_assets.ml.artifacts import atomic_dir
from food_assets.ml.data.transforms import ImagePipeline, Preprocess, denormalize
from food_assets.ml.errors import ConfigError
from food_assets.ml.explain.cams import compute_cams
from food_assets.ml.explain.rendering import GradcamTile, render_gallery, tile_boxes
from food_assets.ml.explain.sampling import (
    class_indices,
    pick_images,
    predict_pool,
    sample_pool,
)
from food_assets.ml.explain.sanity import (
    deletion_drops,
    deletion_summary,
    map_box_to_input,
    pointing_baseline,
    pointing_hits,
    random_pointing_game,
)
from food_assets.ml.models.bundle import ModelCard
from food_assets.ml.models.registry import resolve_cam_layer

GALLERIES = ("correct", "wrong", "per_class")
TILES_FILE = "tiles.parquet"
MANIFEST_FILE = "gradcam.json"
BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")
_TILE_COLUMNS = [
    "gallery", "position", "row", "col", "path", "true_class", "true_idx", "pred_class",
    "pred_idx", "confidence", "correct", "tile_x0", "tile_y0", "tile_x1", "tile_y1",
]  # fmt: skip


@dataclass(frozen=True)
class GradcamOptions:
    """How a report samples its images and draws its galleries.

    Attributes:
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
        batch_size: images per forward pass.
        columns: tiles per gallery row for `correct` / `wrong`.
    """

    n_per_gallery: int = 16
    classes: Sequence[str] | None = None
    per_class: int = 4
    n_classes: int = 4
    seed: int = 0
    max_images: int | None = 1000
    n_sanity: int = 64
    deletion_fraction: float = 0.2
    deletion_fill: str = "mean"
    batch_size: int = 32
    columns: int = 4


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


@dataclass
class _CamPass:
    """What the streamed CAM pass keeps: the gallery tiles by pool row, and per sanity image its
    pointing hit and deletion drops (in sanity order). Nothing else of a batch outlives it."""

    rgb: dict[int, np.ndarray] = field(default_factory=dict)  # (H, W, 3) in [0, 1]
    cams: dict[int, np.ndarray] = field(default_factory=dict)  # (H, W) in [0, 1]
    hits: list[np.ndarray] = field(default_factory=list)
    drops_cam: list[np.ndarray] = field(default_factory=list)
    drops_random: list[np.ndarray] = field(default_factory=list)


def build_gradcam_report(
    model: nn.Module,
    card: ModelCard,
    cam_layer: str,
    cam_reshape: Callable | None,
    frame: pd.DataFrame,
    out_dir: str | Path,
    options: GradcamOptions | None = None,
    *,
    probs: np.ndarray | None = None,
    **settings: Any,
) -> GradcamResult:
    """Galleries of right and wrong predictions with Grad-CAM overlays, plus sanity figures.

    Args:
        model: the trained network (e.g. from `load_bundle`); left in its train/eval mode.
        card: its model card (class names, preprocessing, temperature).
        cam_layer: `ModelSpec.cam_layer`.
        cam_reshape: `ModelSpec.cam_reshape` (ViT), else None.
        frame: split-manifest rows (`path`, `label`; `width`, `height` and `box_*` for the
            pointing game).
        out_dir: report folder, replaced atomically.
        options: sampling and drawing settings; None: the defaults of `GradcamOptions`.
        probs: `(len(frame), C)` calibrated probabilities already computed for `frame` (for
            example by the evaluation asset); skips the prediction pass.
        **settings: `GradcamOptions` fields overriding `options` (`n_per_gallery=6, seed=1`);
            an unknown name is a TypeError.
    """
    opts = dataclasses.replace(options or GradcamOptions(), **settings)
    if not cam_layer:
        raise ConfigError(f"model {card.name!r} has no Grad-CAM layer (cam_layer is None)")
    if frame.empty:
        raise ConfigError("the Grad-CAM frame has no rows; pass a non-empty split")
    pipeline = ImagePipeline(card.preprocess, train=False)
    rng = np.random.default_rng(opts.seed)
    frame, probs = sample_pool(frame.reset_index(drop=True), probs, opts.max_images, rng)
    true_idx = class_indices(frame, card.class_names)
    was_training = model.training
    model.eval()
    try:
        pool = predict_pool(model, card, pipeline, frame, true_idx, probs, opts.batch_size)
        layer = resolve_cam_layer(model, cam_layer)
        picks, chosen, sanity_idx = pick_images(
            pool, rng, n_per_gallery=opts.n_per_gallery, classes=opts.classes,
            n_classes=opts.n_classes, per_class=opts.per_class, n_sanity=opts.n_sanity,
        )  # fmt: skip
        boxes = _input_boxes(frame, sanity_idx, card.preprocess)
        cp = _cam_pass(model, layer, cam_reshape, card, pool, picks, (sanity_idx, boxes), opts)
        metrics = _sanity_metrics(cp, boxes, card.preprocess.input_size, opts.seed)
    finally:
        model.train(was_training)
    metrics["gradcam/accuracy_pool"] = float(pool["correct"].mean())
    metrics["gradcam/n_pool"] = float(len(pool))
    return _write_report(Path(out_dir), card, cam_layer, opts, pool, picks, chosen, cp, metrics)


# --------------------------------------------------------------------------------------------
# CAMs and the sanity figures


def _cam_pass(
    model: nn.Module,
    layer: nn.Module,
    cam_reshape: Callable | None,
    card: ModelCard,
    pool: pd.DataFrame,
    picks: dict[str, list[int]],
    sanity_rows: tuple[np.ndarray, np.ndarray],
    opts: GradcamOptions,
) -> _CamPass:
    """One CAM pass over every pool row a gallery shows or the sanity figures use, streamed:
    `opts.batch_size` images are decoded, explained and scored, and only the gallery tiles and
    the per-image sanity figures are kept before the next batch (ADR 0015).

    `sanity_rows`: the sanity sample's pool rows and their boxes in input coords (NaN: none).
    """
    pipeline = ImagePipeline(card.preprocess, train=False)
    sanity_idx, boxes = sanity_rows
    gallery = set().union(*picks.values())
    sanity = {int(i): k for k, i in enumerate(sanity_idx)}  # pool row -> row of `boxes`
    needed = sorted(gallery | sanity.keys())
    paths, pred = pool["path"].tolist(), pool["pred_idx"].to_numpy()
    rng = np.random.default_rng(opts.seed)  # the deletion test's shifts, drawn image by image
    cp = _CamPass()
    for start in range(0, len(needed), opts.batch_size):
        rows = needed[start : start + opts.batch_size]
        images = torch.stack([pipeline(paths[i]) for i in rows])
        targets = pred[rows].tolist()
        cams = compute_cams(model, layer, images, targets, cam_reshape, batch_size=len(rows))
        shown = [k for k, i in enumerate(rows) if i in gallery]
        if shown:
            rgb = denormalize(images[shown], card.preprocess).permute(0, 2, 3, 1).numpy()
            for j, k in enumerate(shown):
                cp.rgb[rows[k]] = rgb[j].astype(np.float32)
                cp.cams[rows[k]] = cams[k].copy()
        sel = [k for k, i in enumerate(rows) if i in sanity]
        if sel:
            cp.hits.append(pointing_hits(cams[sel], boxes[[sanity[rows[k]] for k in sel]]))
            dc, dr = deletion_drops(
                model, images[sel], cams[sel], [targets[k] for k in sel], rng=rng,
                fraction=opts.deletion_fraction, fill=opts.deletion_fill,
                temperature=card.temperature, batch_size=opts.batch_size,
            )  # fmt: skip
            cp.drops_cam.append(dc)
            cp.drops_random.append(dr)
    return cp


def _input_boxes(frame: pd.DataFrame, sanity_idx: np.ndarray, pre: Preprocess) -> np.ndarray:
    """The object box of each sanity row in model-input coords; NaN where there is none."""
    boxes = np.full((len(sanity_idx), 4), np.nan)
    if set(BOX_COLUMNS) <= set(frame.columns) and {"width", "height"} <= set(frame.columns):
        for k, i in enumerate(sanity_idx):
            row = frame.iloc[int(i)]
            box = [row[c] for c in BOX_COLUMNS]
            if np.all(np.isfinite(np.asarray(box, dtype=float))):
                boxes[k] = map_box_to_input(box, int(row["width"]), int(row["height"]), pre)
    return boxes


def _sanity_metrics(cp: _CamPass, boxes: np.ndarray, size: int, seed: int) -> dict[str, float]:
    hits = np.concatenate(cp.hits) if cp.hits else np.zeros(0)
    hits = hits[~np.isnan(hits)]
    deletion = deletion_summary(
        np.concatenate(cp.drops_cam) if cp.drops_cam else np.zeros(0),
        np.concatenate(cp.drops_random) if cp.drops_random else np.zeros(0),
    )
    return {
        "gradcam/pointing_game": float(hits.mean()) if len(hits) else float("nan"),
        "gradcam/pointing_random_expected": pointing_baseline(boxes, size, size),
        "gradcam/pointing_random_empirical": random_pointing_game(boxes, size, size, seed=seed),
        "gradcam/pointing_n": float(len(hits)),
        "gradcam/deletion_cam_drop": deletion["cam_drop"],
        "gradcam/deletion_random_drop": deletion["random_drop"],
        "gradcam/deletion_gap": deletion["gap"],
        "gradcam/deletion_win_rate": deletion["win_rate"],
        "gradcam/deletion_n": deletion["n"],
    }


# --------------------------------------------------------------------------------------------
# The files


def _write_report(
    out_dir: Path,
    card: ModelCard,
    cam_layer: str,
    opts: GradcamOptions,
    pool: pd.DataFrame,
    picks: dict[str, list[int]],
    chosen: list[str],
    cp: _CamPass,
    metrics: dict[str, float],
) -> GradcamResult:
    """Galleries, `tiles.parquet` and `gradcam.json`, written into a folder swapped in at once."""
    columns = {"correct": opts.columns, "wrong": opts.columns, "per_class": max(1, opts.per_class)}
    rows: list[dict[str, Any]] = []
    galleries: dict[str, Path] = {}
    with atomic_dir(out_dir) as tmp:
        for name in GALLERIES:
            rows += _render(tmp / f"{name}.png", name, picks[name], columns[name], pool, chosen, cp)
            galleries[name] = out_dir / f"{name}.png"
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
                "n_per_gallery": opts.n_per_gallery, "per_class": opts.per_class,
                "seed": opts.seed, "max_images": opts.max_images, "n_sanity": opts.n_sanity,
                "deletion_fraction": opts.deletion_fraction, "deletion_fill": opts.deletion_fill,
                "input_size": card.preprocess.input_size,
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


def _render(
    png: Path,
    name: str,
    idx: list[int],
    cols: int,
    pool: pd.DataFrame,
    chosen: list[str],
    cp: _CamPass,
) -> list[dict[str, Any]]:
    """Draw one gallery; return its rows of the tiles table (padding tiles have none)."""
    tiles = [
        GradcamTile(
            image=cp.rgb[i],
            cam=cp.cams[i],
            true_class=str(pool.at[i, "true_class"]),
            pred_class=str(pool.at[i, "pred_class"]),
            confidence=float(pool.at[i, "confidence"]),
            path=str(pool.at[i, "path"]),
        )
        for i in idx
    ]
    padded: list[int | None] = list(idx)
    if name == "per_class":
        tiles, padded = _rows_per_class(tiles, idx, chosen, cols)
    empty = f"no {name.replace('_', ' ')} predictions" if name != "per_class" else None
    render_gallery(tiles, png, columns=cols, title=empty)
    h, w = tiles[0].image.shape[:2] if tiles else (0, 0)
    rows = []
    for k, (i, box) in enumerate(zip(padded, tile_boxes(len(padded), w, h, cols), strict=True)):
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
    return rows


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


def _no_nan(obj: Any) -> Any:
    # JSON has no NaN; a figure that could not be computed is null.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj
