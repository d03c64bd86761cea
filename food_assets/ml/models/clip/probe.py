"""The linear probe's scikit-learn side: logistic regression with C picked on val, k-shot runs.

Arrays of cached CLIP image features in (`fit.py` extracts them), a fitted classifier, numbers
and tables out. `accuracy` is the top-1 figure both CLIP fits report.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from food_assets.ml.models.clip.config import ClipProbeConfig


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy; NaN for an empty split."""
    return float((pred == y).mean()) if len(y) else float("nan")


def fit_logreg(
    X: np.ndarray,
    y: np.ndarray,
    Xv: np.ndarray,
    yv: np.ndarray,
    *,
    c_grid: Sequence[float],
    max_iter: int,
    seed: int,
) -> tuple[Any, float, list[dict[str, Any]]]:
    """Multinomial L2 logistic regression with C chosen on val accuracy (ties: smaller C).

    The grid is walked from strong to weak regularisation with warm starts, which saves most
    L-BFGS iterations on Food-101-sized feature sets.

    Returns:
        (fitted LogisticRegression at the best C, best C, one row per C)
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=max_iter, random_state=seed, warm_start=True)
    best: Any = None
    best_c, best_acc = float("nan"), -1.0
    rows = []
    for c in sorted(float(v) for v in c_grid):
        clf.set_params(C=c)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(X, y)
        converged = True
        for w in caught:  # keep every other warning visible
            if issubclass(w.category, ConvergenceWarning):
                converged = False
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        acc = accuracy(clf.predict(Xv), yv)
        rows.append({"C": c, "val_acc_top1": acc, "converged": converged})
        if acc > best_acc:
            best, best_c, best_acc = copy.deepcopy(clf), c, acc
    return best, best_c, rows


def kshot_indices(y: np.ndarray, k: int, num_classes: int, seed: int) -> np.ndarray:
    """k train rows per class, seeded per (seed, k); every class must have k rows."""
    rng = np.random.default_rng([seed, k])
    picked = [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c in range(num_classes)]
    return np.sort(np.concatenate(picked))


def kshot_table(
    feats: Mapping[str, tuple[np.ndarray, np.ndarray]],
    cfg: ClipProbeConfig,
    num_classes: int,
    *,
    full: Mapping[str, float],
) -> pd.DataFrame:
    """One row per k in `cfg.k_shots` that the smallest class allows, then the full-data row.

    Args:
        feats: split -> (features, labels) for `train`, `val` and `test`.
        full: the full-data fit's `C`, `val` and `test` accuracy (its row is `shots="all"`).
    """
    (Xtr, ytr), (Xva, yva), (Xte, yte) = feats["train"], feats["val"], feats["test"]
    smallest = np.bincount(ytr, minlength=num_classes).min()
    rows = []
    for k in sorted(set(int(k) for k in cfg.k_shots)):
        if k > smallest:
            continue  # not enough images in the smallest class for this k
        idx = kshot_indices(ytr, k, num_classes, cfg.seed)
        k_clf, k_c, _ = fit_logreg(
            Xtr[idx], ytr[idx], Xva, yva, c_grid=cfg.c_grid, max_iter=cfg.max_iter, seed=cfg.seed
        )
        rows.append(
            {
                "shots": str(k),
                "train_images": len(idx),
                "C": k_c,
                "val_acc_top1": accuracy(k_clf.predict(Xva), yva),
                "test_acc_top1": accuracy(k_clf.predict(Xte), yte) if len(yte) else float("nan"),
            }
        )
    rows.append(
        {
            "shots": "all",
            "train_images": len(ytr),
            "C": full["C"],
            "val_acc_top1": full["val"],
            "test_acc_top1": full["test"],
        }
    )
    return pd.DataFrame(rows)


@dataclass
class ProbeFit:
    """The full-data logistic regression and the k-shot table (`kshot_table`)."""

    clf: Any
    best_c: float
    c_rows: list[dict[str, Any]]
    val_acc: float
    test_acc: float
    kshot: pd.DataFrame
    fit_seconds: float


def fit_probe(
    feats: Mapping[str, tuple[np.ndarray, np.ndarray]], cfg: ClipProbeConfig, num_classes: int
) -> ProbeFit:
    """Fit on all training features (C picked on val), then the k-shot variants."""
    (Xtr, ytr), (Xva, yva), (Xte, yte) = feats["train"], feats["val"], feats["test"]
    t0 = time.perf_counter()
    clf, best_c, c_rows = fit_logreg(
        Xtr, ytr, Xva, yva, c_grid=cfg.c_grid, max_iter=cfg.max_iter, seed=cfg.seed
    )
    fit_seconds = time.perf_counter() - t0
    val_acc = accuracy(clf.predict(Xva), yva)
    test_acc = accuracy(clf.predict(Xte), yte) if len(yte) else float("nan")
    full = {"C": best_c, "val": val_acc, "test": test_acc}
    kshot = kshot_table(feats, cfg, num_classes, full=full)
    return ProbeFit(clf, best_c, c_rows, val_acc, test_acc, kshot, fit_seconds)


def head_parity(head: nn.Linear, clf: Any, X: np.ndarray) -> float:
    """Max |torch head logits - sklearn decision_function| on `X` (binary: the logit gap)."""
    with torch.no_grad():
        head_logits = head(torch.from_numpy(X)).numpy()
    sk_logits = clf.decision_function(X)
    if sk_logits.ndim == 1:
        head_logits, sk_logits = head_logits[:, 1] - head_logits[:, 0], sk_logits
    return float(np.abs(head_logits - sk_logits).max())


def kshot_figure(kshot: pd.DataFrame, model_id: str) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    few = kshot[kshot["shots"] != "all"]
    full = kshot[kshot["shots"] == "all"].iloc[0]
    for col, label, colour in (("val_acc_top1", "val", "C0"), ("test_acc_top1", "test", "C1")):
        if len(few):
            ax.plot(
                few["shots"].astype(int), few[col], "o-", color=colour, label=f"{label}, k-shot"
            )
        ax.axhline(
            full[col],
            color=colour,
            ls="--",
            lw=1,
            label=f"{label}, all {full['train_images']} images",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training images per class")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"CLIP linear probe ({model_id})", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig
