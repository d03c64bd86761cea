"""Which images a Grad-CAM report shows: the pool, the model's predictions on it, the picks.

Every random choice comes from one seeded generator, in a fixed order (pool sample, per-class
picks, sanity sample), so a report is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from food_assets.ml.data.transforms import ImagePipeline
from food_assets.ml.errors import ConfigError
from food_assets.ml.models.bundle import ModelCard


def sample_pool(
    frame: pd.DataFrame,
    probs: np.ndarray | None,
    max_images: int | None,
    rng: np.random.Generator,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """At most `max_images` rows of `frame` (and of `probs`, row for row), a seeded sample."""
    if probs is not None and len(probs) != len(frame):
        raise ValueError(f"probs has {len(probs)} rows but the frame has {len(frame)}")
    if max_images is not None and len(frame) > max_images:
        keep = np.sort(rng.choice(len(frame), size=max_images, replace=False))
        frame = frame.iloc[keep].reset_index(drop=True)
        probs = probs[keep] if probs is not None else None
    return frame, probs


def class_indices(frame: pd.DataFrame, class_names: Sequence[str]) -> np.ndarray:
    """The model's class index of each row's label.

    Mapped by name, not by the manifest's label_idx: the model's class order is the card's.
    """
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted(set(frame["label"]) - index.keys())
    if unknown:
        raise ConfigError(
            f"the manifest has classes the model does not know: {unknown[:5]}; evaluate the model "
            "on the split manifest it was trained with"
        )
    return frame["label"].map(index).to_numpy(dtype=np.int64)


@torch.no_grad()
def _predict_top1(
    model: nn.Module, pipeline: ImagePipeline, paths: Sequence[str], temperature: float, bs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and its probability per path, a batch at a time.

    Only these two numbers per image are kept: the pool's memory is a few bytes per scored image
    whatever the class count, and no decoded batch outlives its forward pass.
    """
    device = next(model.parameters()).device
    pred, conf = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.float64)]
    for start in range(0, len(paths), bs):
        x = torch.stack([pipeline(p) for p in paths[start : start + bs]]).to(device)
        top = (model(x).float() / temperature).softmax(dim=1).max(dim=1)
        pred.append(top.indices.cpu().numpy().astype(np.int64))
        conf.append(top.values.cpu().numpy().astype(np.float64))
    return np.concatenate(pred), np.concatenate(conf)


def predict_pool(
    model: nn.Module,
    card: ModelCard,
    pipeline: ImagePipeline,
    frame: pd.DataFrame,
    true_idx: np.ndarray,
    probs: np.ndarray | None,
    batch_size: int,
) -> pd.DataFrame:
    """One row per pool image: path, true and predicted class (index and name), confidence.

    `probs`: the pool's calibrated probabilities when the caller has them; None runs the model.
    """
    paths = frame["path"].astype(str).tolist()
    if probs is None:
        pred_idx, confidence = _predict_top1(model, pipeline, paths, card.temperature, batch_size)
    else:
        pred_idx = probs.argmax(axis=1)
        confidence = probs[np.arange(len(probs)), pred_idx].astype(float)
    names = np.asarray(card.class_names, dtype=object)
    pool = pd.DataFrame(
        {
            "path": paths,
            "true_idx": true_idx,
            "true_class": names[true_idx],
            "pred_idx": pred_idx,
            "pred_class": names[pred_idx],
            "confidence": confidence,
        }
    )
    pool["correct"] = pool["true_idx"] == pool["pred_idx"]
    return pool


def pick_classes(pool: pd.DataFrame, classes: Sequence[str] | None, k: int) -> list[str]:
    """`classes` (each must be in the pool), or the `k` with the lowest accuracy in the pool."""
    if classes is not None:
        missing = sorted(set(classes) - set(pool["true_class"]))
        if missing:
            raise ConfigError(f"no images of class(es) {missing} in the Grad-CAM pool")
        return list(classes)
    # Default: the classes the model gets most wrong in the pool, as those are worth looking at.
    acc = pool.groupby("true_class")["correct"].mean().reset_index()
    acc = acc.sort_values(["correct", "true_class"], kind="stable")
    return acc["true_class"].head(k).tolist()


def pick_images(
    pool: pd.DataFrame,
    rng: np.random.Generator,
    *,
    n_per_gallery: int,
    classes: Sequence[str] | None,
    n_classes: int,
    per_class: int,
    n_sanity: int,
) -> tuple[dict[str, list[int]], list[str], np.ndarray]:
    """Pool rows per gallery, the per-class gallery's classes, and the sanity sample.

    `correct` / `wrong`: the `n_per_gallery` most confident; `per_class`: `per_class` random rows
    of each chosen class (`pick_classes`); sanity: `n_sanity` random rows. All from `rng`, in
    that order.
    """
    paths = pool["path"].tolist()
    # Most confident first; ties broken by path so the galleries are reproducible.
    by_conf = pool.sort_values(["confidence", "path"], ascending=[False, True], kind="stable")
    picks = {
        "correct": by_conf[by_conf["correct"]].head(n_per_gallery).index.tolist(),
        "wrong": by_conf[~by_conf["correct"]].head(n_per_gallery).index.tolist(),
    }
    chosen = pick_classes(pool, classes, n_classes)
    per_class_idx: list[int] = []
    for c in chosen:
        members = pool.index[pool["true_class"] == c].to_numpy()
        take = rng.choice(members, size=min(per_class, len(members)), replace=False)
        per_class_idx.extend(sorted(take.tolist(), key=lambda i: paths[i]))
    picks["per_class"] = per_class_idx
    sanity_idx = np.sort(rng.choice(len(pool), size=min(n_sanity, len(pool)), replace=False))
    return picks, chosen, sanity_idx
