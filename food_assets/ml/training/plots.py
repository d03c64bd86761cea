"""The training curves saved beside each trained model (`training_curves.png`)."""

from __future__ import annotations

import pandas as pd


def plot_history(history: pd.DataFrame, title: str):
    """Loss and top-1 accuracy per epoch, train vs val (a matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    for split, style in (("train", "-o"), ("val", "--s")):
        ax_loss.plot(history["epoch"] + 1, history[f"{split}/loss"], style, label=split)
        ax_acc.plot(history["epoch"] + 1, history[f"{split}/acc_top1"], style, label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig
