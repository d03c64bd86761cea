"""What the terminal shows while a Dagster run goes: one line per step as it starts and ends.

`step_logger` is a Dagster logger for `food-assets run / train / evaluate / export`. Each line is
the time, the step, and what happened: `started`; `done  12.3 s  top-1 0.833 [0.733, 0.917]`
(the step's key figure, `key_figure`); `skipped` with why; `FAILED` with the one-line reason;
and, for a training step, `epoch 2/4: val top-1 0.613` as each epoch ends
(`food_assets.ml.training.progress`). Everything else (engine events, debug lines, stack traces)
stays in the Dagster event log, and in the run's log file when `food-assets run` writes one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # importing Dagster for real would slow `food-assets --help`
    import dagster as dg

#: Width of the step column (the longest asset names are ~30 characters).
STEP_WIDTH = 30
#: How much of a skip reason fits on a step line; the end-of-run summary shows it whole.
REASON_WIDTH = 70


def _value(meta: Mapping[str, Any], key: str) -> Any:
    v = meta.get(key)
    return getattr(v, "value", v)


def shorten(text: str, width: int = REASON_WIDTH) -> str:
    """The first line of `text`, cut to `width` characters with an ellipsis."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def key_figure(asset: str, meta: Mapping[str, Any]) -> str:
    """The one figure a person wants from a materialization of `asset`, from its metadata.

    An evaluation: its test top-1 with the 95 % interval; an export: its batch-1 CPU latency
    per precision; a model: its best val top-1; Grad-CAM: the pointing game; the leaderboard:
    the champion; a skipped asset: why. '' when there is nothing to say.
    """
    if _value(meta, "skipped"):
        return "skipped: " + shorten(str(_value(meta, "reason") or ""))
    if asset.startswith("evaluation_") and _value(meta, "acc_top1") is not None:
        ci = _value(meta, "acc_top1_ci95")
        return f"top-1 {float(_value(meta, 'acc_top1')):.3f}" + (f" {ci}" if ci else "")
    if asset.startswith("onnx_"):
        parts = [
            f"{label} {float(_value(meta, key)):.1f} ms"
            for key, label in (("ort_fp32_ms_b1", "fp32"), ("ort_int8_ms_b1", "int8"))
            if _value(meta, key) is not None
        ]
        return ("ONNX Runtime " + ", ".join(parts) + " per image") if parts else ""
    if asset.startswith("model_") and _value(meta, "best_val_acc") is not None:
        return f"best val top-1 {float(_value(meta, 'best_val_acc')):.3f}"
    if asset.startswith("gradcam_") and _value(meta, "pointing_game") is not None:
        return f"pointing game {float(_value(meta, 'pointing_game')):.2f}"
    if _value(meta, "champion") is not None:
        return f"champion: {_value(meta, 'champion')}"
    rows = _value(meta, "dagster/row_count")
    return f"{rows} rows" if rows is not None else ""


def _failure_reason(event: Any) -> str:
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return shorten(data.user_failure_data.description, 160)
    if data.error is not None:  # its message starts with the exception's class
        return shorten(data.error.message, 160)
    return "unknown error"


class StepLines(logging.Handler):
    """Turns Dagster's log records into the terminal's step lines (see the module doc).

    A step that ends within `started_after` seconds gets one line, its end; a longer one also
    gets a `started` line when that time has passed (a timer), so a short step is one line and a
    long one shows that it is running. A step that only ran asset checks is not shown when they
    passed or evaluated nothing (the summary lists those that did not pass).

    Args:
        stream: the terminal.
        started_after: seconds a step runs before its `started` line is printed.
    """

    def __init__(self, stream: TextIO, *, started_after: float = 3.0) -> None:
        super().__init__()
        self.stream = stream
        self.started_after = started_after
        self._write_lock = threading.Lock()
        self._started: dict[str, float] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._figures: dict[str, list[str]] = {}
        self._checks: dict[str, list[tuple[bool, str]]] = {}
        self._announced: set[str] = set()  # steps whose `started` line was printed

    def _print(self, created: float, step: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(created))
        with self._write_lock:
            self.stream.write(f"{stamp}  {step:<{STEP_WIDTH}} {text}\n".rstrip() + "\n")
            self.stream.flush()

    def _announce(self, step: str) -> None:
        """Print the `started` line of a step still running (once)."""
        timer = self._timers.pop(step, None)
        if timer is not None:
            timer.cancel()
            self._announced.add(step)
            self._print(self._started.get(step, time.time()), step, "started")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emit(record)
        except Exception:  # a display problem must never fail the run
            self.handleError(record)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        super().close()

    def _emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        step = meta.get("step_key") or "run"
        message = str(meta.get("orig_message") or record.getMessage())
        if event is None:
            if message.startswith("epoch "):  # ml.training.progress.EpochProgress
                self._announce(step)
                self._print(record.created, step, "  " + message)
            elif message.startswith("Dependencies for step"):
                self._print(record.created, step, "not run (a step it depends on failed)")
            elif record.levelno >= logging.WARNING and " skipped: " not in message:
                self._announce(step)
                self._print(record.created, step, f"{record.levelname.lower()}: {shorten(message)}")
            return
        kind = event.event_type_value
        if kind == "STEP_START":
            self._started[step] = record.created
            timer = threading.Timer(self.started_after, self._announce, args=(step,))
            timer.daemon = True
            self._timers[step] = timer
            timer.start()
        elif kind == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization
            figure = key_figure(mat.asset_key.to_user_string(), mat.metadata)
            self._figures.setdefault(step, []).append(figure)
        elif kind == "ASSET_CHECK_EVALUATION":
            check = event.event_specific_data
            shown = not check.passed and not (check.description or "").startswith("not evaluated")
            verdict = f"check {check.check_name}: {shorten(check.description or 'failed', 60)}"
            self._checks.setdefault(step, []).append((shown, verdict))
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            self._end(record, step, kind == "STEP_SUCCESS", event)

    def _end(self, record: logging.LogRecord, step: str, success: bool, event: Any) -> None:
        timer = self._timers.pop(step, None)
        if timer is not None:
            timer.cancel()
        seconds = record.created - self._started.pop(step, record.created)
        figures = [f for f in self._figures.pop(step, None) or [] if f]
        checks = self._checks.pop(step, [])
        shown_checks = [verdict for shown, verdict in checks if shown]
        if not success:
            if shown_checks:  # a blocking check failed the step: say which, and why
                text = f"{'FAILED':<8}{seconds:7.1f} s  " + "; ".join(shown_checks)
                self._print(record.created, step, text)
                return
            self._print(
                record.created, step, f"{'FAILED':<8}{seconds:7.1f} s  {_failure_reason(event)}"
            )
            return
        announced = step in self._announced
        self._announced.discard(step)
        if not figures and checks and not shown_checks and not announced:
            return  # a quick check-only step whose checks passed or evaluated nothing
        if not figures and checks and not shown_checks:
            figures = ["no check failed"]
        skipped = bool(figures) and figures[0].startswith("skipped: ")
        if skipped:
            # Downstream of a skipped model: its name says why; the model's line said the rest.
            reason = figures[0].removeprefix("skipped: ")
            figures = [reason.split(" was skipped")[0] + " was skipped" if " was skipped" in reason
                       else reason]  # fmt: skip
        word = "skipped" if skipped else "done"
        self._print(
            record.created, step, f"{word:<8}{seconds:7.1f} s  " + "; ".join(figures + shown_checks)
        )


def step_logger(stream: TextIO, *, started_after: float = 3.0) -> dg.LoggerDefinition:
    """A Dagster logger writing `StepLines` to `stream` (the terminal)."""
    import dagster as dg

    @dg.logger(description="food-assets: one line per step on the terminal")
    def food_assets_steps(init_context: dg.InitLoggerContext) -> logging.Logger:
        logger = logging.getLogger("food_assets.cli.progress")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.handlers = [StepLines(stream, started_after=started_after)]
        return logger

    return food_assets_steps
