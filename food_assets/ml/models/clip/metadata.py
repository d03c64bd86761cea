"""What the CLIP fits record: the model card and the metadata keys of each asset.

Pure functions of what a fit produced, kept together so the recorded keys (which the Dagster
layer, MLflow and the tests read) can be reviewed in one place, apart from the fitting steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from food_assets.ml.models.bundle import ModelCard
from food_assets.ml.models.clip.config import ClipConfig
from food_assets.ml.models.clip.loading import LoadedClip
from food_assets.ml.models.clip.modules import ClipZeroShotClassifier
from food_assets.ml.models.clip.probe import ProbeFit
from food_assets.ml.models.clip.text import ClassEmbeddings


def model_card(
    name: str, mode: str, loaded: LoadedClip, names: Sequence[str], metrics: dict[str, float]
) -> ModelCard:
    """The bundle's card: `build_kwargs` carry the architecture and class names, so the bundle
    rebuilds offline (`weights="none"`) before its saved weights are loaded."""
    return ModelCard(
        name=name,
        class_names=list(names),
        preprocess=loaded.preprocess,
        build_kwargs={**loaded.build_kwargs(), "class_names": list(names)},
        mode=mode,
        weights_source=loaded.weights.source,
        metrics=metrics,
    )


def common_metadata(loaded: LoadedClip, cfg: ClipConfig) -> dict[str, Any]:
    """Keys both CLIP fits record: which model, which weights (by content), which preprocessing."""
    return {
        "model_id": loaded.model_id,
        "arch": loaded.arch,
        "pretrained": loaded.weights.tag or "",
        "checkpoint": str(loaded.weights.checkpoint or ""),
        "weights_source": loaded.weights.source,
        "weights_identity": loaded.weights.identity(),
        "quick_gelu": loaded.quick_gelu,
        "preprocess": loaded.preprocess.to_dict(),
        "open_clip_resize_mode": loaded.resize_mode,
        "params_image_tower": int(sum(p.numel() for p in loaded.model.visual.parameters())),
    }


def zero_shot_metadata(
    emb: ClassEmbeddings,
    table: pd.DataFrame,
    model: ClipZeroShotClassifier,
    cfg: ClipConfig,
    *,
    text_seconds: float,
    cache_hits: dict[str, bool],
) -> dict[str, Any]:
    """What the zero-shot asset records beyond the scores: prompts, the table, reuse, timing."""
    return {
        "templates": list(emb.templates),
        "prompt_names": list(emb.prompt_names),
        "template_table": table.to_dict("records"),
        "logit_scale": float(model.logit_scale),
        "text_encode_seconds": round(text_seconds, 3),
        "class_embeddings_reused": bool(cfg.class_embeddings),
        "feature_cache_hit": cache_hits,
    }


def probe_metadata(
    fitted: ProbeFit,
    feats: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    cache_hits: dict[str, bool],
    cache_key: str,
    feature_seconds: float,
    parity: float,
) -> dict[str, Any]:
    """What the probe asset records beyond the shared keys: scores, C, k-shot, cache, timing."""
    return {
        "val/acc_top1": fitted.val_acc,
        "test/acc_top1": fitted.test_acc,
        "best_C": fitted.best_c,
        "c_grid": fitted.c_rows,
        "kshot_table": fitted.kshot.to_dict("records"),
        "feature_dim": int(feats["train"][0].shape[1]),
        "train_images": int(len(feats["train"][1])),
        "feature_cache_hit": cache_hits,
        "feature_cache_key": cache_key,
        "feature_seconds": round(feature_seconds, 3),
        "fit_seconds": round(fitted.fit_seconds, 3),
        "sklearn_parity_max_abs": parity,
    }


__all__ = ["common_metadata", "model_card", "probe_metadata", "zero_shot_metadata"]
