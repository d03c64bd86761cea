"""Pure metrics: arrays in, numbers and DataFrames out. No files, no plots, no global state.

Conventions used throughout:

- `scores` are logits or probabilities `(N, C)`; `labels` are int class indices `(N,)`.
- Class ranking is `top_k_indices`: a stable sort on the scores, highest first, with ties
  broken the way scikit-learn's `top_k_accuracy_score` breaks them, so the top-k accuracy, the
  per-sample hits fed to the bootstrap and the top-k columns written to Parquet always agree.
- Library implementations are used where they exist (scikit-learn for precision/recall/F1,
  AUCs, curves, confusion matrix, top-k accuracy). The calibration error is computed here in
  float64 from the reliability bins and checked against torchmetrics in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import log_softmax
from scipy.special import softmax as _softmax
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
    top_k_accuracy_score,
)
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix

from food_assets.ml.errors import ConfigError

ECE_BINS = 15


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ConfigError(f"scores must be a non-empty (N, C) array; got shape {scores.shape}")
    if labels.shape != (scores.shape[0],):
        raise ConfigError(f"{scores.shape[0]} score rows but labels have shape {labels.shape}")
    if not np.all(np.isfinite(scores)):
        raise ConfigError("scores contain NaN or inf; the model diverged or the logits are corrupt")
    c = scores.shape[1]
    if labels.min() < 0 or labels.max() >= c:
        raise ConfigError(
            f"labels must lie in [0, {c - 1}] for {c} classes; got {labels.min()}..{labels.max()}"
        )
    return scores, labels.astype(np.int64, copy=False)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature` in float64 (float32 rounds small
    probabilities to zero too early). The one softmax: evaluation and every predictor use it."""
    return _softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of the true class, computed stably from logits in float64."""
    logits, labels = _check(logits, labels)
    logp = log_softmax(logits.astype(np.float64), axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def per_sample_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of each row, float64 `(N,)`."""
    logits, labels = _check(logits, labels)
    logp = log_softmax(logits.astype(np.float64), axis=1)
    return -logp[np.arange(len(labels)), labels]


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """`(N, k)` class indices, best first; ties resolved as scikit-learn's top-k accuracy does."""
    scores = np.asarray(scores)
    k = min(int(k), scores.shape[1])
    return np.argsort(scores, axis=1, kind="mergesort")[:, ::-1][:, :k]


def top_k_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean `(N,)`: is the true class among the `k` best scores."""
    scores, labels = _check(scores, labels)
    return (top_k_indices(scores, k) == labels[:, None]).any(axis=1)


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose true class is in the top `k` (scikit-learn)."""
    scores, labels = _check(scores, labels)
    c = scores.shape[1]
    if k >= c:
        return 1.0  # scikit-learn warns here; every class is in the top k by definition
    if c == 2:
        # scikit-learn reads 2-class scores as binary and wants only the positive column.
        return float(top_k_hits(scores, labels, k).mean())
    return float(top_k_accuracy_score(labels, scores, k=k, labels=np.arange(c)))


def bootstrap_ci(
    values: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    chunk_elements: int = 1 << 22,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean of each column of `values`.

    All columns share the same resampled row indices (a paired bootstrap), so top-1 and top-5
    intervals come from the same resamples. Resamples are drawn in chunks of at most
    `chunk_elements` indices, which bounds memory at 25k test images x 1000 resamples; the
    chunking does not change the result (one generator, drawn in order).

    Args:
        values: `(N,)` or `(N, K)` per-sample values, e.g. 0/1 hits.
        n_resamples: bootstrap resamples.
        seed: seed of the NumPy generator; same seed, same interval.
        confidence: central mass of the interval.

    Returns:
        `(low, high)`, each a scalar array for 1-D input or `(K,)` for 2-D input.
    """
    v = np.asarray(values, dtype=np.float64)
    one_d = v.ndim == 1
    v = v[:, None] if one_d else v
    n = v.shape[0]
    if n == 0:
        raise ConfigError("cannot bootstrap an empty sample")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, chunk_elements // n)
    means = np.empty((n_resamples, v.shape[1]), dtype=np.float64)
    for start in range(0, n_resamples, per_chunk):
        stop = min(start + per_chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = v[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    return (low[0], high[0]) if one_d else (low, high)


def accuracy_with_ci(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    ks: Sequence[int] = (1, 5),
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Top-k accuracies with bootstrap intervals: `acc_top{k}`, `_ci_low`, `_ci_high`."""
    scores, labels = _check(scores, labels)
    hits = np.stack([top_k_hits(scores, labels, k) for k in ks], axis=1)
    low, high = bootstrap_ci(hits, n_resamples=n_resamples, seed=seed, confidence=confidence)
    out: dict[str, float] = {}
    for j, k in enumerate(ks):
        out[f"acc_top{k}"] = top_k_accuracy(scores, labels, k)
        out[f"acc_top{k}_ci_low"] = float(low[j])
        out[f"acc_top{k}_ci_high"] = float(high[j])
    return out


def classification_metrics(
    labels: np.ndarray, preds: np.ndarray, num_classes: int
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-class precision, recall, F1 and support, plus macro and weighted averages.

    A ratio with a zero denominator (a class never predicted, or absent from the labels) is NaN
    rather than 0 and is left out of the macro average, so an empty class does not drag the
    average down; a class that is absent but predicted still scores precision 0.

    Returns:
        `(per_class, averages)`: one row per class index with columns `precision`, `recall`,
        `f1`, `support`; and `macro_precision`, `macro_recall`, `macro_f1`,
        `weighted_precision`, `weighted_recall`, `weighted_f1`.
    """
    classes = np.arange(num_classes)
    p, r, f, s = precision_recall_fscore_support(
        labels, preds, labels=classes, average=None, zero_division=np.nan
    )
    per_class = pd.DataFrame(
        {"class_idx": classes, "precision": p, "recall": r, "f1": f, "support": s.astype(np.int64)}
    )
    averages: dict[str, float] = {}
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(
            labels, preds, labels=classes, average=avg, zero_division=np.nan
        )
        averages[f"{avg}_precision"] = float(ap)
        averages[f"{avg}_recall"] = float(ar)
        averages[f"{avg}_f1"] = float(af)
    return per_class, averages


def one_vs_rest_auc(labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Per-class one-vs-rest ROC AUC and PR AUC (average precision).

    A class with no positive (absent from the labels) or no negative example has no defined
    AUC: it gets NaN and a `note` that says why, instead of a warning or an error.

    Returns:
        One row per class index: `class_idx`, `roc_auc`, `pr_auc`, `note`.
    """
    probs, labels = _check(probs, labels)
    n, c = probs.shape
    roc = np.full(c, np.nan)
    pr = np.full(c, np.nan)
    notes = [""] * c
    counts = np.bincount(labels, minlength=c)
    for k in range(c):
        if counts[k] == 0:
            notes[k] = "absent from the labels: AUC undefined"
            continue
        if counts[k] == n:
            notes[k] = "no negative examples: AUC undefined"
            continue
        positive = labels == k
        roc[k] = roc_auc_score(positive, probs[:, k])
        pr[k] = average_precision_score(positive, probs[:, k])
    return pd.DataFrame({"class_idx": np.arange(c), "roc_auc": roc, "pr_auc": pr, "note": notes})


def roc_pr_curves(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[int]
) -> dict[int, dict[str, np.ndarray]]:
    """One-vs-rest ROC and precision-recall curves for the given class indices.

    Classes without both positives and negatives are skipped (their curves are undefined).

    Returns:
        class index -> `fpr`, `tpr`, `precision`, `recall` arrays and `prevalence`.
    """
    probs, labels = _check(probs, labels)
    curves: dict[int, dict[str, np.ndarray]] = {}
    for k in classes:
        positive = labels == k
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, k])
        precision, recall, _ = precision_recall_curve(positive, probs[:, k])
        curves[int(k)] = {
            "fpr": fpr,
            "tpr": tpr,
            "precision": precision,
            "recall": recall,
            "prevalence": np.float64(positive.mean()),
        }
    return curves


def reliability_bins(
    probs: np.ndarray, labels: np.ndarray, *, n_bins: int = ECE_BINS
) -> pd.DataFrame:
    """Per-bin accuracy and mean top-1 confidence: the data of a reliability diagram.

    Bins are `n_bins` equal-width intervals `[lo, hi)` as in torchmetrics, except that a
    confidence of exactly 1.0 goes in the last bin (torchmetrics gives it a bin of its own).

    Returns:
        One row per bin: `bin_low`, `bin_high`, `count`, `accuracy`, `confidence` (NaN if empty).
    """
    probs, labels = _check(probs, labels)
    conf = probs.max(axis=1).astype(np.float64)
    # argmax (first index on ties) as torchmetrics does.
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
    return pd.DataFrame(
        {
            "bin_low": edges[:-1],
            "bin_high": edges[1:],
            "count": count.astype(np.int64),
            "accuracy": acc,
            "confidence": mean_conf,
        }
    )


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, *, n_bins: int = ECE_BINS
) -> float:
    """Top-label expected calibration error (L1) with `n_bins` equal-width bins.

    ECE = sum over bins of (share of samples in the bin) x |accuracy - mean confidence|.

    Computed in float64 from `reliability_bins`, so the number printed on the reliability
    diagram is the one its bars show. It equals torchmetrics' `MulticlassCalibrationError(
    n_bins=15, norm="l1")` (the tests check this) up to float32 rounding, which torchmetrics
    works in, and the bin of exact 1.0 confidences noted in `reliability_bins`.
    """
    bins = reliability_bins(probs, labels, n_bins=n_bins)
    filled = bins[bins["count"] > 0]
    share = filled["count"].to_numpy() / bins["count"].sum()
    gap = np.abs(filled["accuracy"].to_numpy() - filled["confidence"].to_numpy())
    return float(np.sum(share * gap))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """`(C, C)` counts: row = true class, column = predicted class (scikit-learn)."""
    return _sk_confusion_matrix(labels, preds, labels=np.arange(num_classes))


def most_confused_pairs(
    cm: np.ndarray, class_names: Sequence[str], *, top: int = 20
) -> pd.DataFrame:
    """The off-diagonal cells with the most errors.

    Returns:
        Up to `top` rows sorted by `count` (ties: true then predicted index): `true_idx`,
        `true_class`, `pred_idx`, `pred_class`, `count`, `rate` (share of the true class's
        examples sent to that predicted class).
    """
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off)
    counts = off[t, p]
    # lexsort: last key is primary -> count descending, then true, then predicted index.
    order = np.lexsort((p, t, -counts))[:top]
    t, p, counts = t[order], p[order], counts[order]
    support = cm.sum(axis=1)
    return pd.DataFrame(
        {
            "true_idx": t.astype(np.int64),
            "true_class": [class_names[i] for i in t],
            "pred_idx": p.astype(np.int64),
            "pred_class": [class_names[i] for i in p],
            "count": counts.astype(np.int64),
            "rate": counts / support[t],
        }
    )


def hardest_examples(
    logits: np.ndarray,
    labels: np.ndarray,
    paths: Sequence[str],
    class_names: Sequence[str],
    *,
    top: int = 20,
    by: str = "loss",
) -> pd.DataFrame:
    """The examples the model gets most wrong.

    Args:
        logits: logits to rank by (pass temperature-scaled logits to rank calibrated losses).
        by: `"loss"` (highest cross-entropy first) or `"confident_wrong"` (misclassified
            examples only, most confident prediction first).

    Returns:
        Up to `top` rows: `index` (row in the split), `path`, `true_idx`, `true_class`,
        `pred_idx`, `pred_class`, `confidence` (probability of the prediction), `true_prob`,
        `loss`, `correct`.
    """
    logits, labels = _check(logits, labels)
    if by not in ("loss", "confident_wrong"):
        raise ConfigError(f"unknown ranking {by!r}; use 'loss' or 'confident_wrong'")
    probs = softmax(logits)
    pred = top_k_indices(logits, 1)[:, 0]
    rows = np.arange(len(labels))
    loss = per_sample_loss(logits, labels)
    confidence = probs[rows, pred]
    if by == "loss":
        order = np.lexsort((rows, -loss))
    else:
        wrong = rows[pred != labels]
        order = wrong[np.lexsort((wrong, -confidence[wrong]))]
    order = order[:top]
    return pd.DataFrame(
        {
            "index": order.astype(np.int64),
            "path": [str(paths[i]) for i in order],
            "true_idx": labels[order],
            "true_class": [class_names[i] for i in labels[order]],
            "pred_idx": pred[order].astype(np.int64),
            "pred_class": [class_names[i] for i in pred[order]],
            "confidence": confidence[order],
            "true_prob": probs[order, labels[order]],
            "loss": loss[order],
            "correct": pred[order] == labels[order],
        }
    )
