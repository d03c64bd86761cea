"""The zero-shot head ensembled with the linear probe (WiSE-FT's final-layer interpolation).

Both heads read the same frozen, L2-normalised image features: the zero-shot head is
`logit_scale * E` (E: the prompt-ensembled class matrix, no bias) and the probe is the logistic
regression `(W, b)`. For one shared feature extractor, mixing their logits,

    z(alpha) = (1 - alpha) * z_zero_shot + alpha * z_probe,

is the same as mixing their weights, `((1 - alpha) * logit_scale * E + alpha * W, alpha * b)`:
the weight-space ensemble of WiSE-FT (Wortsman et al. 2022) restricted to the last layer, which
the paper reports improving on both ends (most under distribution shift). `alpha` is picked on
val from a grid (ties go to the larger alpha, the probe's side); test is only reported. Because
the mixture is one linear layer, `zero_shot_ensemble: bundle` stores it as the probe's head at
no inference cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from food_assets.ml.models.clip.config import ClipProbeConfig
from food_assets.ml.models.clip.loading import LoadedClip
from food_assets.ml.models.clip.modules import ClipLinearProbe
from food_assets.ml.models.clip.probe import accuracy
from food_assets.ml.models.clip.zero_shot import zero_shot_embeddings

#: alpha = 0 is the zero-shot head, 1 the linear probe.
ALPHA_GRID: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))


def ensemble_logits(zero_shot: np.ndarray, probe: np.ndarray, alpha: float) -> np.ndarray:
    """`(1 - alpha) * zero_shot + alpha * probe` (logits of the same images)."""
    return (1.0 - alpha) * np.asarray(zero_shot) + alpha * np.asarray(probe)


def ensemble_head(
    class_matrix: torch.Tensor,
    logit_scale: float,
    probe_weight: torch.Tensor,
    probe_bias: torch.Tensor,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear head whose logits are `ensemble_logits` of the two heads: (weight, bias)."""
    weight = (1.0 - alpha) * logit_scale * class_matrix.float() + alpha * probe_weight.float()
    return weight, alpha * probe_bias.float()


@dataclass(frozen=True)
class EnsembleFit:
    """The chosen `alpha`, the mixed head, and the accuracies of both ends and the mix."""

    alpha: float
    weight: torch.Tensor
    bias: torch.Tensor
    scores: dict[str, float]  # `<split>/acc_top1_{zero_shot,probe,ensemble}`
    alpha_rows: list[dict[str, float]]  # val accuracy per alpha on the grid


def choose_alpha(
    zero_shot: np.ndarray, probe: np.ndarray, labels: np.ndarray, grid: Sequence[float]
) -> tuple[float, list[dict[str, float]]]:
    """The grid value with the best val accuracy (the largest on a tie), and every row."""
    rows = []
    for a in grid:
        pred = ensemble_logits(zero_shot, probe, a).argmax(1)
        rows.append({"alpha": float(a), "val_acc_top1": accuracy(pred, labels)})
    best = max(rows, key=lambda r: (r["val_acc_top1"], r["alpha"]))
    return best["alpha"], rows


def fit_ensemble(
    feats: Mapping[str, tuple[np.ndarray, np.ndarray]],
    class_matrix: torch.Tensor,
    logit_scale: float,
    probe_head: torch.nn.Linear,
    grid: Sequence[float] | None = None,
) -> EnsembleFit:
    """Pick alpha on `feats["val"]` and score both heads and the mix on every split given.

    Args:
        feats: split -> (L2-normalised image features, labels); needs `val`.
        class_matrix: `(C, D)` zero-shot class embeddings (unit rows).
        logit_scale: CLIP's learned temperature, `exp(logit_scale)`.
        probe_head: the fitted linear probe (its logits are the probe's).
        grid: the alphas tried; None: `ALPHA_GRID`.
    """
    E = class_matrix.detach().float().cpu()
    W, b = probe_head.weight.detach().float().cpu(), probe_head.bias.detach().float().cpu()

    def logits(split: str) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.asarray(feats[split][0], dtype=np.float32))
        return (logit_scale * x @ E.T).numpy(), (x @ W.T + b).numpy()

    zs_val, pr_val = logits("val")
    alpha, rows = choose_alpha(zs_val, pr_val, feats["val"][1], grid or ALPHA_GRID)
    scores: dict[str, float] = {}
    for split, (_, y) in feats.items():
        if not len(y):
            continue
        zs, pr = logits(split)
        scores[f"{split}/acc_top1_zero_shot"] = accuracy(zs.argmax(1), y)
        scores[f"{split}/acc_top1_probe"] = accuracy(pr.argmax(1), y)
        scores[f"{split}/acc_top1_ensemble"] = accuracy(ensemble_logits(zs, pr, alpha).argmax(1), y)
    weight, bias = ensemble_head(E, logit_scale, W, b, alpha)
    return EnsembleFit(alpha, weight, bias, scores, rows)


def ensemble_with_zero_shot(
    probe: ClipLinearProbe,
    loaded: LoadedClip,
    names: tuple[str, ...],
    cfg: ClipProbeConfig,
    feats: Mapping[str, tuple[np.ndarray, np.ndarray]],
    device: torch.device,
) -> EnsembleFit | None:
    """`cfg.zero_shot_ensemble`: the probe mixed with the zero-shot head (`ensemble.py`); with
    `bundle`, the mixed head replaces the probe's before the bundle is written."""
    if cfg.zero_shot_ensemble == "off":
        return None
    emb = zero_shot_embeddings(loaded, names, cfg, device=device)
    scale = float(loaded.model.logit_scale.detach().exp())
    fit = fit_ensemble(feats, emb.matrix, scale, probe.head)
    if cfg.zero_shot_ensemble == "bundle":
        with torch.no_grad():
            probe.head.weight.copy_(fit.weight)
            probe.head.bias.copy_(fit.bias)
    return fit


def ensemble_metadata(fit: EnsembleFit, mode: str) -> dict[str, object]:
    """What the probe asset records about the ensemble (`zero_shot_ensemble: report|bundle`)."""
    return {
        "ensemble/alpha": fit.alpha,
        "ensemble/in_bundle": mode == "bundle",
        **{f"ensemble/{k}": v for k, v in fit.scores.items()},
        "ensemble_alpha_table": fit.alpha_rows,
    }


__all__ = [
    "ALPHA_GRID",
    "EnsembleFit",
    "choose_alpha",
    "ensemble_head",
    "ensemble_logits",
    "ensemble_metadata",
    "ensemble_with_zero_shot",
    "fit_ensemble",
]
