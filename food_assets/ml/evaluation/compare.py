"""One table (and one plot) comparing every evaluated model: accuracy, calibration, cost."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from food_assets.ml.artifacts import write_figure, write_text
from food_assets.ml.errors import ConfigError
from food_assets.ml.evaluation import plots


@dataclass(frozen=True)
class Column:
    """One leaderboard column, defined once: the table, its CSV, its Markdown, the wiring that
    fills a row and the Dagster column schema all read it.

    Attributes:
        key: the row key and table column.
        header: the Markdown header; None: in the table and CSV only (the CI bounds go into the
            accuracy cell).
        fmt: a format spec for a number (after `unit`); `text` columns are shown as they are.
        unit: divides a number before formatting (`params` in millions).
        text: the column holds text (the model name, the export that serves).
        source: where the wiring takes the value: `evaluation` (its test summary, `test/<key>`),
            `model` (the model's metadata), `export` (the ONNX export's latency summary),
            `name`.
    """

    key: str
    header: str | None
    fmt: str = ".4g"
    unit: float = 1.0
    text: bool = False
    source: str = "evaluation"


#: Every column, in table order; a row's other keys become extra columns after them.
LEADERBOARD = (
    Column("model", "model", text=True, source="name"),
    Column("acc_top1", "top-1 acc (95 % CI)"),  # its cell holds the CI too (`_accuracy_cell`)
    Column("acc_top1_ci_low", None),
    Column("acc_top1_ci_high", None),
    Column("macro_f1", "macro-F1", ".3f"),
    Column("ece", "ECE", ".3f"),
    Column("params", "params (M)", ".2f", unit=1e6, source="model"),
    Column("gmacs", "GMACs", ".2f", source="model"),
    Column("train_seconds", "train (s)", ".0f", source="model"),
    Column("latency_ms", "CPU latency (ms)", ".1f", source="export"),
    Column("serving", "served", text=True, source="export"),
    Column("eager_ms_b1", "eager b1", ".1f", source="export"),
    Column("ort_fp32_ms_b1", "ORT fp32 b1", ".1f", source="export"),
    Column("ort_int8_ms_b1", "ORT int8 b1", ".1f", source="export"),
    Column("ov_fp32_ms_b1", "OV fp32 b1", ".1f", source="export"),
    Column("ov_bf16_ms_b1", "OV bf16 b1", ".1f", source="export"),
    Column("ov_int8_ms_b1", "OV int8 b1", ".1f", source="export"),
    Column("eager_ms_b32", "eager b32", ".1f", source="export"),
    Column("ort_fp32_ms_b32", "ORT fp32 b32", ".1f", source="export"),
    Column("ort_int8_ms_b32", "ORT int8 b32", ".1f", source="export"),
    Column("ov_fp32_ms_b32", "OV fp32 b32", ".1f", source="export"),
    Column("ov_bf16_ms_b32", "OV bf16 b32", ".1f", source="export"),
    Column("ov_int8_ms_b32", "OV int8 b32", ".1f", source="export"),
    Column("latency_threads", "threads", ".0f", source="export"),
    Column("acc_top5", "acc_top5"),
    Column("ece_calibrated", "ece_calibrated"),
)
_ALIASES = {"name": "model", "cpu_latency_ms": "latency_ms", "latency_cpu_ms": "latency_ms"}
_MISSING = "-"


@dataclass
class ComparisonResult:
    """The comparison table, best model first.

    Attributes:
        table: one row per model, the `LEADERBOARD` columns then any extra keys; missing
            values NaN.
        markdown: the human-readable table (accuracy as "81.2 % [80.7, 81.7]").
        x_axis: the cost column the plot uses: `latency_ms` unless more models (with an
            accuracy) report `params` than latency; None if no model reports either.

    `latency_ms` is the batch-1 latency of the export that serves by default (`serving`:
    `fp32` or `int8`, the fastest that passed its gates); the `*_ms_b1` / `*_ms_b32` columns
    are the medians of each backend at batch 1 and 32 (ms), all timed in one process per model
    with `latency_threads` threads.
    """

    table: pd.DataFrame
    markdown: str
    x_axis: str | None


def _canonical(key: str) -> str:
    # Accept evaluation summary keys as they are ("test/acc_top1" -> "acc_top1").
    key = key.split("/", 1)[1] if key.startswith("test/") else key
    return _ALIASES.get(key, key)


def compare_models(rows: Sequence[Mapping[str, Any]]) -> ComparisonResult:
    """Build the model comparison table.

    Args:
        rows: one mapping per model with `model` (or `name`) and any of `acc_top1`,
            `acc_top1_ci_low`, `acc_top1_ci_high`, `macro_f1`, `ece`, `params`, `gmacs`,
            `train_seconds`, `latency_ms`, `serving` (text), the per-backend latency columns
            and `latency_threads`; a value may be missing or None. Keys prefixed
            `test/` (as in metrics.json) are accepted; other keys become extra columns.

    Returns:
        `ComparisonResult`, sorted by top-1 accuracy (highest first, missing last, ties by name).

    Raises:
        ConfigError: no rows, a row without a model name, a duplicate name, or a value that
            is not a number.
    """
    if not rows:
        raise ConfigError("compare_models needs at least one evaluated model; got none")
    columns = [c.key for c in LEADERBOARD]
    text_columns = {c.key for c in LEADERBOARD if c.text}
    records: list[dict[str, Any]] = []
    extra: list[str] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        rec = {_canonical(str(k)): v for k, v in row.items()}
        name = rec.get("model")
        if not name:
            raise ConfigError(f"comparison row {i} has no 'model' name: {dict(row)!r}")
        name = str(name)
        if name in seen:
            raise ConfigError(f"model {name!r} appears twice in the comparison; pass one row each")
        seen.add(name)
        rec["model"] = name
        for key, value in rec.items():
            if key in text_columns:
                if key != "model":
                    rec[key] = None if value is None else str(value)
                continue
            rec[key] = _number(name, key, value)
            if key not in columns and key not in extra:
                extra.append(key)
        records.append(rec)
    table = pd.DataFrame.from_records(records, columns=[*columns, *extra])
    numeric = [c for c in table.columns if c not in text_columns]
    table[numeric] = table[numeric].astype(np.float64)
    table = table.sort_values(
        ["acc_top1", "model"], ascending=[False, True], na_position="last", kind="mergesort"
    ).reset_index(drop=True)
    # Latency is the cost users feel; fall back to size when more models report a size.
    scored = table[table["acc_top1"].notna()]
    n_latency = int(scored["latency_ms"].notna().sum())
    n_params = int(scored["params"].notna().sum())
    x_axis: str | None
    if n_latency and n_latency >= n_params:
        x_axis = "latency_ms"
    elif n_params:
        x_axis = "params"
    else:
        x_axis = None
    return ComparisonResult(table=table, markdown=_markdown(table, extra), x_axis=x_axis)


def _number(model: str, key: str, value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model {model!r}: {key} must be a number or None, got {value!r}"
        ) from exc


def _fmt(value: float, spec: str) -> str:
    return _MISSING if pd.isna(value) else format(value, spec)


def _accuracy_cell(acc: float, lo: float, hi: float) -> str:
    if pd.isna(acc):
        return _MISSING
    cell = f"{100 * acc:.1f} %"
    if not (pd.isna(lo) or pd.isna(hi)):
        cell += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return cell


def _markdown(table: pd.DataFrame, extra: list[str]) -> str:
    shown = pd.DataFrame(index=table.index)
    for col in (*LEADERBOARD, *(Column(key, key) for key in extra)):
        values = table[col.key]
        if col.header is None:
            continue
        if col.key == "acc_top1":
            cells = [
                _accuracy_cell(a, lo, hi)
                for a, lo, hi in zip(
                    values, table["acc_top1_ci_low"], table["acc_top1_ci_high"], strict=True
                )
            ]
        elif col.text and col.key != "model":
            cells = [_MISSING if v is None or pd.isna(v) else v for v in values]
        elif col.text:
            cells = list(values)
        else:
            cells = [_fmt(v / col.unit, col.fmt) for v in values]
        shown[col.header] = cells
    # tabulate would right-align "-" oddly in numeric-looking columns; everything is text here.
    return shown.to_markdown(index=False, disable_numparse=True) + "\n"


def save_comparison(result: ComparisonResult, out_dir: Path) -> dict[str, Path]:
    """Write `comparison.md`, `comparison.csv` and the accuracy-vs-cost plot into `out_dir`.

    The plot is `accuracy_vs_latency.png`, or `accuracy_vs_size.png` (parameters) when
    `result.x_axis` is `params`.

    Returns:
        `markdown`, `csv`, `plot` -> path.
    """
    out_dir = Path(out_dir)
    paths = {
        "markdown": write_text(out_dir / "comparison.md", result.markdown),
        "csv": write_text(out_dir / "comparison.csv", result.table.to_csv(index=False)),
    }
    if result.x_axis == "params":
        table = result.table.assign(params_m=result.table["params"] / 1e6)
        fig = plots.comparison_figure(table, "params_m", "parameters (millions)")
        paths["plot"] = write_figure(out_dir / "accuracy_vs_size.png", fig)
    else:
        fig = plots.comparison_figure(result.table, "latency_ms", "CPU latency (ms)")
        paths["plot"] = write_figure(out_dir / "accuracy_vs_latency.png", fig)
    return paths
