"""Evaluation figures. Each function builds and returns a matplotlib `Figure`; it writes nothing.

The caller saves with `food_assets.ml.artifacts.write_figure` (atomic, closes the figure).
Figures are created with `matplotlib.figure.Figure`, not `pyplot`, so no GUI backend and no
global figure registry are involved: safe in Dagster worker processes and threads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from food_assets.ml.data.images import open_image
from food_assets.ml.errors import FoodAssetsError


def _normalise_and_sort(
    cm: np.ndarray, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Row-normalised matrix in display order, per-class accuracy (original order), the order.

    Worst class first; classes without test images (NaN rows) last; ties by name, so the order
    is stable from run to run.
    """
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(support > 0, cm / support, np.nan)
    acc = np.diag(norm)
    order = sorted(range(cm.shape[0]), key=lambda i: (math.isnan(acc[i]), acc[i], class_names[i]))
    return norm[np.ix_(order, order)], acc, order


def _write_cell_values(ax: Axes, norm: np.ndarray, font: float) -> None:
    """Print each non-negligible share in its cell (only called when the cells are big enough)."""
    c = norm.shape[0]
    for r in range(c):
        for k in range(c):
            v = norm[r, k]
            if not math.isnan(v) and v >= 0.005:
                ax.text(
                    k,
                    r,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=font - 1,
                    color="black" if v > 0.5 else "white",
                )


def confusion_matrix_figure(cm: np.ndarray, class_names: Sequence[str]) -> Figure:
    """A row-normalised confusion matrix that stays readable at 101 classes.

    - Each row is divided by the true class's support, so a cell reads "share of images of
      class `row` predicted as `column`" and rare classes are as visible as common ones.
    - Classes are sorted by per-class accuracy (the diagonal), worst first: the weak classes and
      their confusions gather in the top-left corner. Each y tick shows that accuracy.
    - A square-root colour scale keeps 1-5 % confusions visible next to a bright diagonal.
    - The figure grows with the class count (about 0.17 inch per class) and the tick font
      shrinks to 5 pt, so every class name stays legible when the PNG is viewed at full size.
    """
    norm, acc, order = _normalise_and_sort(cm, class_names)
    c = len(order)
    side = min(max(6.0, 0.17 * c + 3.0), 40.0)
    font = max(5.0, min(10.0, 500.0 / max(c, 1)))
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.add_subplot()
    # Grey marks rows of classes with no test image (nothing to normalise by).
    cmap = colormaps["viridis"].with_extremes(bad="0.85")
    im = ax.imshow(
        np.ma.masked_invalid(norm),
        cmap=cmap,
        norm=PowerNorm(0.5, vmin=0, vmax=1),
        interpolation="nearest",
    )
    ticks = np.arange(c)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels([class_names[i] for i in order], rotation=90, fontsize=font)
    ax.set_yticklabels(
        [
            f"{class_names[i]} ({acc[i]:.2f})"
            if not math.isnan(acc[i])
            else f"{class_names[i]} (-)"
            for i in order
        ],
        fontsize=font,
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (per-class accuracy)")
    ax.set_title("Confusion matrix, row-normalised; classes sorted by accuracy, worst first")
    if c <= 25:
        _write_cell_values(ax, norm, font)
    cbar = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    cbar.set_label("share of the true class (square-root scale)")
    return fig


def roc_pr_figure(
    curves: Mapping[int, Mapping[str, np.ndarray]],
    class_names: Sequence[str],
    roc_auc: Mapping[int, float],
    pr_auc: Mapping[int, float],
) -> Figure:
    """One-vs-rest ROC (left) and precision-recall (right) curves, one line per class.

    Args:
        curves: from `metrics.roc_pr_curves`, for the classes to show (the worst ones).
        roc_auc, pr_auc: class index -> AUC, shown in the legend.
    """
    fig = Figure(figsize=(12, 5.5))
    ax_roc, ax_pr = fig.subplots(1, 2)
    for k, cv in curves.items():
        name = class_names[k]
        line = ax_roc.plot(cv["fpr"], cv["tpr"], lw=1.5, label=f"{name} (AUC {roc_auc[k]:.3f})")
        color = line[0].get_color()
        ax_pr.plot(
            cv["recall"], cv["precision"], lw=1.5, color=color, label=f"{name} (AP {pr_auc[k]:.3f})"
        )
        # A random classifier's PR curve is flat at the class's prevalence.
        ax_pr.axhline(float(cv["prevalence"]), color=color, lw=0.6, ls=":")
    ax_roc.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="chance")
    ax_roc.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="ROC, worst classes by AUC (one-vs-rest)",
    )
    ax_pr.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="Precision-recall, same classes (dotted: prevalence)",
    )
    for ax in (ax_roc, ax_pr):
        if ax.get_legend_handles_labels()[0]:  # an empty legend warns
            ax.legend(fontsize=8, loc="lower right" if ax is ax_roc else "upper right")
        ax.grid(alpha=0.3)
    if not curves:
        ax_roc.text(0.5, 0.5, "no class has both positives and negatives", ha="center")
    fig.tight_layout()
    return fig


def reliability_figure(
    before: pd.DataFrame,
    ece_before: float,
    after: pd.DataFrame | None = None,
    ece_after: float | None = None,
    temperature: float | None = None,
) -> Figure:
    """Reliability diagram(s): accuracy vs mean confidence per bin, with the sample histogram.

    A calibrated model's bars sit on the diagonal; bars below it mean over-confidence. With
    `after`, a second column shows the same after temperature scaling.

    Args:
        before, after: from `metrics.reliability_bins`.
    """
    panels = [("raw", before, ece_before)]
    if after is not None:
        panels.append((f"temperature-scaled (T = {temperature:.3f})", after, ece_after))
    fig = Figure(figsize=(5.5 * len(panels), 6.5))
    axes = fig.subplots(2, len(panels), squeeze=False, height_ratios=[3, 1], sharex=True)
    for j, (title, bins, ece) in enumerate(panels):
        ax, hx = axes[0, j], axes[1, j]
        width = float(bins["bin_high"].iloc[0] - bins["bin_low"].iloc[0])
        centers = (bins["bin_low"] + bins["bin_high"]).to_numpy() / 2
        acc = bins["accuracy"].fillna(0).to_numpy()
        conf = bins["confidence"].fillna(0).to_numpy()
        filled = bins["count"].to_numpy() > 0
        ax.bar(
            centers[filled],
            acc[filled],
            width=width,
            color="tab:blue",
            edgecolor="black",
            lw=0.5,
            label="accuracy",
        )
        # The gap between confidence and accuracy, the quantity ECE averages.
        ax.bar(
            centers[filled],
            conf[filled] - acc[filled],
            bottom=acc[filled],
            width=width,
            color="tab:red",
            alpha=0.3,
            edgecolor="tab:red",
            lw=0.5,
            label="gap",
        )
        ax.plot([0, 1], [0, 1], color="0.4", ls="--", lw=1, label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{title}\nECE = {ece:.4f}")
        ax.legend(loc="upper left", fontsize=8)
        hx.bar(
            centers, bins["count"].to_numpy(), width=width, color="0.5", edgecolor="black", lw=0.5
        )
        hx.set(xlabel="confidence (top-1 probability)", ylabel="images")
    fig.tight_layout()
    return fig


def hardest_grid(
    hardest: pd.DataFrame, *, max_images: int = 16, columns: int = 4, thumb_px: int = 192
) -> Figure:
    """Thumbnails of the hardest examples titled true / predicted (confidence).

    Args:
        hardest: from `metrics.hardest_examples` (`path`, `true_class`, `pred_class`,
            `confidence`, `correct`).

    An image that can no longer be decoded becomes a grey tile naming the reason: the figure
    is a diagnostic and should not fail an evaluation whose numbers are already computed.
    """
    rows_df = hardest.head(max_images)
    n = max(len(rows_df), 1)
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    fig = Figure(figsize=(2.6 * columns, 2.9 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    if rows_df.empty:
        axes[0].text(0.5, 0.5, "no examples", ha="center", va="center")
    for ax, row in zip(axes, rows_df.itertuples(index=False), strict=False):
        try:
            img = open_image(row.path, draft_size=thumb_px)
            img.thumbnail((thumb_px, thumb_px))
            ax.imshow(np.asarray(img))
        except FoodAssetsError as exc:
            ax.imshow(np.full((thumb_px, thumb_px, 3), 200, dtype=np.uint8))
            reason = getattr(exc, "reason", "unreadable")
            ax.text(thumb_px / 2, thumb_px / 2, reason, ha="center", va="center", fontsize=8)
        color = "tab:green" if bool(row.correct) else "tab:red"
        ax.set_title(
            f"true: {row.true_class}\npred: {row.pred_class} ({row.confidence:.2f})",
            fontsize=8,
            color=color,
        )
    fig.suptitle("Hardest test images (highest loss): true / predicted (confidence)")
    fig.tight_layout()
    return fig


def comparison_figure(table: pd.DataFrame, x: str, x_label: str) -> Figure:
    """Top-1 accuracy (with its bootstrap CI as error bars) against `x`, one labelled point each.

    Args:
        table: `compare_models` table (`model`, `acc_top1`, `acc_top1_ci_low/high`, `x`).
        x: the column on the horizontal axis (log scale when it spans more than 20x).
    """
    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    have = table.dropna(subset=[x, "acc_top1"]) if x in table else table.iloc[0:0]
    for row in have.itertuples(index=False):
        d = row._asdict()
        y = d["acc_top1"]
        lo, hi = d.get("acc_top1_ci_low"), d.get("acc_top1_ci_high")
        yerr = None
        if lo is not None and hi is not None and not (pd.isna(lo) or pd.isna(hi)):
            yerr = [[max(y - lo, 0.0)], [max(hi - y, 0.0)]]
        ax.errorbar([d[x]], [y], yerr=yerr, fmt="o", capsize=4, ms=7)
        ax.annotate(d["model"], (d[x], y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    if len(have) and have[x].min() > 0 and have[x].max() / have[x].min() > 20:
        ax.set_xscale("log")
    missing = sorted(set(table["model"]) - set(have["model"]))
    if missing:
        ax.text(
            0.01,
            0.01,
            f"not shown (no {x_label} or accuracy): " + ", ".join(missing),
            transform=ax.transAxes,
            fontsize=8,
            va="bottom",
        )
    if have.empty:
        ax.text(
            0.5,
            0.5,
            f"no model has both accuracy and {x_label}",
            ha="center",
            transform=ax.transAxes,
        )
    ax.set(
        xlabel=x_label, ylabel="top-1 accuracy (95 % bootstrap CI)", title=f"Accuracy vs {x_label}"
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
