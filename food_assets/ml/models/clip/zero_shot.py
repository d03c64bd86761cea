"""The zero-shot classifier's fitting side: which class matrix, and how each template scores.

`fit.py` extracts the image features; here they meet the class matrices, one per template and
the ensemble, so the gain from ensembling is measured, not assumed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from food_assets.ml.errors import CheckpointError
from food_assets.ml.models.clip.config import ClipConfig
from food_assets.ml.models.clip.loading import LoadedClip
from food_assets.ml.models.clip.probe import accuracy
from food_assets.ml.models.clip.text import (
    ClassEmbeddings,
    build_class_embeddings,
    check_class_order,
    load_class_embeddings,
)


def zero_shot_embeddings(
    loaded: LoadedClip, names: tuple[str, ...], cfg: ClipConfig, *, device: torch.device
) -> ClassEmbeddings:
    """The ensembled class matrix: reused from `cfg.class_embeddings` if set, else encoded.

    Raises:
        CheckpointError: the reused file belongs to another class order or other weights.
    """
    if not cfg.class_embeddings:
        return build_class_embeddings(
            loaded, names, cfg.templates(), overrides=cfg.class_name_overrides, device=device
        )
    emb = load_class_embeddings(cfg.class_embeddings)
    check_class_order(
        emb.class_names, names, what=f"the class-embedding file {cfg.class_embeddings}"
    )
    if emb.weights_identity != loaded.weights.identity():
        raise CheckpointError(
            f"{cfg.class_embeddings} was encoded with other CLIP weights "
            f"({emb.weights_identity[:23]}, not {loaded.weights.identity()[:23]}); drop the "
            "`class_embeddings` setting to re-encode the prompts"
        )
    return emb


def single_template_matrices(
    loaded: LoadedClip, emb: ClassEmbeddings, cfg: ClipConfig, *, device: torch.device
) -> dict[str, torch.Tensor]:
    """One class matrix per template of `emb` (none for a single template).

    Only to show what each template contributes; the model keeps the ensemble.
    """
    singles: dict[str, torch.Tensor] = {}
    if len(emb.templates) > 1:
        for t in emb.templates:
            singles[t] = build_class_embeddings(
                loaded, emb.class_names, [t], overrides=cfg.class_name_overrides, device=device
            ).matrix
    return singles


def score_templates(
    feats: Mapping[str, tuple[np.ndarray, np.ndarray]],
    emb: ClassEmbeddings,
    singles: Mapping[str, torch.Tensor],
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Top-1 accuracy of each template alone and of the ensemble, per split.

    Args:
        feats: split -> (normalised image features, labels); an empty split is skipped.
        emb: the ensembled matrix.
        singles: template -> its own matrix (`single_template_matrices`).

    Returns:
        (one row per split and prompt set, metadata: `<split>/acc_top1` of the ensemble and, with
        several templates, the best and mean single template and the ensemble's gain over the
        best one)
    """
    rows: list[dict[str, object]] = []
    metadata: dict[str, float] = {}
    for split, (X, y) in feats.items():
        if not len(y):
            continue
        x = torch.from_numpy(X)
        single = {t: accuracy((x @ m.T).argmax(1).numpy(), y) for t, m in singles.items()}
        rows.extend({"split": split, "prompts": t, "acc_top1": a} for t, a in single.items())
        ens = accuracy((x @ emb.matrix.T).argmax(1).numpy(), y)
        rows.append(
            {"split": split, "prompts": f"ensemble of {len(emb.templates)}", "acc_top1": ens}
        )
        metadata[f"{split}/acc_top1"] = ens
        if single:
            best = max(single.values())
            metadata[f"{split}/acc_top1_best_single_template"] = best
            metadata[f"{split}/acc_top1_mean_single_template"] = float(
                np.mean(list(single.values()))
            )
            metadata[f"{split}/ensemble_gain_over_best_single"] = ens - best
    return pd.DataFrame(rows, columns=["split", "prompts", "acc_top1"]), metadata
