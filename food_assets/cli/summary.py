"""The end of `food-assets run` (and so of `make run`): what the run produced, in a few lines.

Two halves, so the wording can be tested without a run:

- `collect(result, ...)` reads a finished Dagster run (`ExecuteInProcessResult`) into a plain
  `RunOutcome`: the leaderboard table, the champion, the checks that did not pass, the models
  that were skipped and why, the failed steps;
- `render(outcome)` turns it into lines: the leaderboard (model, top-1 with its 95 % interval,
  CPU latency, served precision), the champion and why, the checks that failed or evaluated
  nothing and why, and the next commands. A failed run ends with each failed step, its one-line
  reason and where the full log is; never a traceback.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from food_assets.cli.progress import shorten

#: How every check that evaluated nothing begins its description (`assets._common`).
NOT_EVALUATED = "not evaluated: "
WRAP = 100


@dataclass(frozen=True)
class CheckLine:
    """One check that did not pass: `failed` (blocking), `warning`, or `not evaluated`."""

    asset: str
    check: str
    status: str
    description: str


@dataclass(frozen=True)
class RunOutcome:
    """What `render` needs from a finished run; every field plain data.

    Attributes:
        rows: the leaderboard's rows (`model`, `acc_top1`, `acc_top1_ci_low`, `acc_top1_ci_high`,
            `latency_ms`, `serving`), best first; None when the leaderboard was not in the run.
        skipped: model -> why it was skipped (its `model_<name>` asset's reason).
        champion: the champion's name, `"none"`, or None when the leaderboard did not run.
        eligible: the models whose accuracy check passed in this run.
        failures: `(step, one-line reason)` of each failed step.
        not_run: how many steps did not run because a step they depend on failed.
    """

    run_id: str
    success: bool
    seconds: float
    steps: int
    rows: list[dict[str, Any]] | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    champion: str | None = None
    champion_uri: str | None = None
    eligible: list[str] = field(default_factory=list)
    checks: list[CheckLine] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    not_run: int = 0
    log_path: str | None = None
    mlflow_uri: str = "sqlite:///data/mlflow/mlflow.db"
    program: str = "food-assets"
    commands: tuple[str, ...] = ("predict", "demo")


def _value(meta: Mapping[str, Any], key: str) -> Any:
    v = meta.get(key)
    return getattr(v, "value", v)


def duration(seconds: float) -> str:
    """`42 s`, `4 min 03 s`, `1 h 02 min`."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _number(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _table(rows: Sequence[Mapping[str, Any]], skipped: Mapping[str, str]) -> list[str]:
    header = ("model", "top-1", "95 % CI", "latency", "served")
    body = []
    for r in rows:
        acc, lo, hi = (
            _number(r.get(k)) for k in ("acc_top1", "acc_top1_ci_low", "acc_top1_ci_high")
        )
        ms = _number(r.get("latency_ms"))
        serving = r.get("serving")
        body.append(
            (
                str(r.get("model")),
                "-" if acc is None else f"{acc:.3f}",
                "-" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]",
                "-" if ms is None else f"{ms:.1f} ms",
                serving if isinstance(serving, str) and serving else "eager fp32",
            )
        )
    body += [(name, "skipped", "", "", "") for name in sorted(skipped) if name not in
             {b[0] for b in body}]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *body]
    ]


def _champion(o: RunOutcome) -> list[str]:
    if o.champion is None:
        return []
    if o.champion == "none":
        return ["champion: none: no model passed its accuracy floor (see the checks below)"]
    row = next((r for r in o.rows or [] if r.get("model") == o.champion), {})
    acc = _number(row.get("acc_top1"))
    others = len(o.eligible) - 1
    why = (
        f"the highest test top-1{f' ({acc:.3f})' if acc is not None else ''} of the "
        f"{len(o.eligible)} models that passed their accuracy floor"
        if others > 0
        else "the only model that passed its accuracy floor"
    )
    uri = f"; load it as {o.champion_uri}" if o.champion_uri else ""
    return [f"champion: {o.champion}: {why} (ADR 0012){uri}"]


def _checks(o: RunOutcome) -> list[str]:
    lines: list[str] = []
    for c in o.checks:
        if c.status != "not evaluated":
            lines.append(f"  {c.status.upper() if c.status == 'failed' else c.status}: "
                         f"{c.asset} {c.check}: {shorten(c.description, 120)}")  # fmt: skip
    # Checks that evaluated nothing, grouped by their model's skip reason: models that share it
    # (two CLIP entries without the same weights) get one entry: what, then how to fix it.
    by_model: dict[str, int] = {}
    for c in o.checks:
        if c.status == "not evaluated":
            model = c.asset.split("_", 1)[-1] if c.asset.split("_", 1)[0] in _PER_MODEL else c.asset
            by_model[model] = by_model.get(model, 0) + 1
    by_reason: dict[str, list[str]] = {}
    for model in sorted(by_model):
        by_reason.setdefault(o.skipped.get(model, "its model was skipped"), []).append(model)
    for reason, models in by_reason.items():
        n = sum(by_model[m] for m in models)
        what, _, how = reason.partition(": ")
        lines.append(f"  not evaluated: {n} checks of {', '.join(models)}: {shorten(what, 80)}")
        if how:
            lines += textwrap.wrap(how, WRAP, initial_indent="    ", subsequent_indent="    ")
    return (["checks that did not pass:"] + lines) if lines else ["every check passed"]


#: The per-model asset kinds: `<kind>_<model>` (evaluation_custom_cnn, onnx_resnet50, ...).
_PER_MODEL = ("model", "evaluation", "gradcam", "onnx")


def _next_commands(o: RunOutcome) -> list[str]:
    p = o.program
    cmds = [
        ("make ui", "the Dagster UI, http://127.0.0.1:3000: this run, each asset, its plots"),
        (f".venv/bin/mlflow ui --backend-store-uri {o.mlflow_uri}", "MLflow: runs, registry"),
    ]
    if "predict" in o.commands:
        cmds.append((f"{p} predict PHOTO.jpg --model champion", "classify your own photos"))
    if "serve" in o.commands:
        cmds.append((f"{p} serve", "serve the champion over HTTP"))
    if "demo" in o.commands:
        cmds.append((f"{p} demo --model champion", "the Gradio demo, with Grad-CAM"))
    return ["next:"] + [f"  {c}   # {why}" for c, why in cmds]


def render(o: RunOutcome) -> list[str]:
    """The summary's lines (no trailing newlines)."""
    where = []
    if o.log_path:
        where.append(f"full log: {o.log_path}")
    where.append(f"Dagster UI: `make ui` -> Runs -> {o.run_id}")
    if not o.success:
        lines = [f"run {o.run_id} FAILED after {duration(o.seconds)}"]
        failed = [f"  {step}: {reason}" for step, reason in o.failures]
        lines += failed or ["  no step failed: the run itself did (see the log)"]
        if o.not_run:
            lines.append(f"  {o.not_run} step(s) did not run: a step they depend on failed")
        return lines + where
    lines = [f"run {o.run_id} succeeded in {duration(o.seconds)} ({o.steps} steps)", ""]
    if o.rows is not None:
        lines += ["leaderboard (test split):", *_table(o.rows, o.skipped), ""]
        lines += _champion(o)
    lines += _checks(o)
    lines += ["", *_next_commands(o), *where]
    return lines


# -- reading a finished run ---------------------------------------------------------------------


def _failure_reasons(
    result: Any, failed_checks: Mapping[str, list[CheckLine]]
) -> list[tuple[str, str]]:
    out = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        step, data = event.step_key, event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            reason = data.user_failure_data.description
        elif data.error is not None and data.error.cls_name == "DagsterAssetCheckFailedError":
            checks = failed_checks.get(step, [])
            reason = "; ".join(f"{c.check} failed: {c.description}" for c in checks) or (
                data.error.message
            )
        elif data.error is not None:
            reason = data.error.message  # it starts with the exception's class
        else:
            reason = "unknown error"
        out.append((step, shorten(reason, 200)))
    return out


def collect(result: Any, *, seconds: float, **extra: Any) -> RunOutcome:
    """A finished run as a `RunOutcome`; `extra` fills the fields the run does not know
    (`log_path`, `mlflow_uri`, `program`, `commands`)."""
    import dagster as dg

    mats = {
        e.step_materialization_data.materialization.asset_key.to_user_string():
            e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }  # fmt: skip
    skipped = {
        name.removeprefix("model_"): str(_value(meta, "reason"))
        for name, meta in mats.items()
        if name.startswith("model_") and _value(meta, "skipped")
    }
    checks, eligible, failed_by_step = [], [], {}
    for c in result.get_asset_check_evaluations():
        asset = c.asset_key.to_user_string()
        if c.passed:
            if c.check_name == "accuracy_above_floor":
                eligible.append(asset.removeprefix("evaluation_"))
            continue
        desc = c.description or ""
        if desc.startswith(NOT_EVALUATED):
            status = "not evaluated"
        elif c.severity == dg.AssetCheckSeverity.WARN:
            status = "warning"
        else:
            status = "failed"
        line = CheckLine(asset, c.check_name, status, desc)
        checks.append(line)
        if status == "failed":
            failed_by_step.setdefault(asset, []).append(line)
    rows = None
    board = mats.get("leaderboard")
    if board is not None and result.success:
        table = result.asset_value("leaderboard")
        rows = table.to_dict("records") if hasattr(table, "to_dict") else None
    steps = {e.step_key for e in result.all_events if e.is_step_success or e.is_step_failure}
    not_run = sum(1 for e in result.all_events if e.is_step_skipped)
    return RunOutcome(
        run_id=result.run_id,
        success=result.success,
        seconds=seconds,
        steps=len(steps),
        rows=rows,
        skipped=skipped,
        champion=None if board is None else str(_value(board, "champion") or "none"),
        champion_uri=None if board is None else _value(board, "champion_uri"),
        eligible=sorted(eligible),
        checks=checks,
        failures=_failure_reasons(result, failed_by_step),
        not_run=not_run,
        **extra,
    )
