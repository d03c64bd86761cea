"""`EpochProgress`: one short line per finished epoch, for whoever runs the training.

A Lightning `Logger` rather than a callback because a fit's caller already passes loggers
(`FitContext.loggers`): the Dagster asset adds one that writes to its `context.log`, so the
terminal summary of `food-assets run` shows "epoch 2/4: val top-1 0.613" while a long step runs,
and the Dagster event log keeps the same line. No Dagster here: `report` is any callable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lightning.pytorch.loggers import Logger


def epoch_line(metrics: Mapping[str, Any], total_epochs: int | None) -> str | None:
    """The line for one validation epoch's metrics, or None when they are not one.

    Lightning logs the epoch-level validation metrics once per epoch with the `epoch` it added;
    the sanity check before training logs nothing to loggers.
    """
    if "val/acc_top1" not in metrics or "epoch" not in metrics:
        return None
    epoch = int(metrics["epoch"]) + 1  # Lightning counts from 0, people from 1
    of = f"/{total_epochs}" if total_epochs else ""
    line = f"epoch {epoch}{of}: val top-1 {float(metrics['val/acc_top1']):.3f}"
    if "val/loss" in metrics:
        line += f", val loss {float(metrics['val/loss']):.3f}"
    return line


class EpochProgress(Logger):
    """Calls `report(line)` once per validation epoch (`epoch_line`).

    Args:
        report: where the line goes (the Dagster asset passes `context.log.info`).
        total_epochs: the run's `epochs`, shown as "epoch 2/4"; None: "epoch 2".
    """

    def __init__(self, report: Callable[[str], None], total_epochs: int | None = None) -> None:
        super().__init__()
        self._report: Callable[[str], None] | None = report
        self._total = total_epochs

    @property
    def name(self) -> str:
        return "progress"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        line = epoch_line(metrics, self._total)
        if line is not None and self._report is not None:
            self._report(line)

    def __getstate__(self) -> dict[str, Any]:
        # `ddp_spawn` pickles the loggers into its workers; the caller's log handle does not
        # travel (a Dagster logger holds a lock), and the workers then report nothing.
        state = dict(self.__dict__)
        state["_report"] = None
        return state
