"""A leaderboard column is defined once (`compare.LEADERBOARD`: key, header, format, source)
and read by the table, its Markdown, the row the wiring fills and the Dagster column schema."""

from __future__ import annotations

import pytest

from food_assets.ml.evaluation import compare
from food_assets.ml.evaluation.compare import Column, compare_models
from food_assets.ml.inference.serving import latency_summary


def test_the_export_columns_are_what_the_latency_summary_gives() -> None:
    """Breakage caught: a latency column added to the serving summary (or renamed there)
    without its leaderboard column, or the reverse (the row then carries an unknown key)."""
    export = {c.key for c in compare.LEADERBOARD if c.source == "export"}
    assert export == set(latency_summary(None, None))


def test_one_new_column_reaches_the_table_the_markdown_and_the_row(monkeypatch) -> None:
    """One `Column` appended: its values are in the table (numbers), its header and format in
    the Markdown, and `_comparison_row` fills it from the evaluation's summary. Breakages
    tried, each fails: the Markdown back to its own list of headers (no `top-3 acc` column);
    the row back to a fixed metric list (None: the cell shows `-`)."""
    from food_assets.defs.assets.evaluation import EvaluationReport
    from food_assets.defs.assets.leaderboard import _comparison_row

    new = Column("acc_top3", "top-3 acc", ".2f")
    monkeypatch.setattr(compare, "LEADERBOARD", (*compare.LEADERBOARD, new))

    class _NoStore:  # `_latency_columns` reads nothing for a model without an export
        root = None

        def fetch(self, *args, **kwargs):
            return None

    monkeypatch.setattr(
        "food_assets.defs.assets.leaderboard._latency_columns", lambda store, name: {}
    )
    rows = [
        _comparison_row(
            name,
            EvaluationReport(
                name, "sample", {"test/acc_top1": acc, "test/acc_top3": top3}, 1.0, {}
            ),
            _NoStore(),
        )
        for name, acc, top3 in (("a", 0.5, 0.875), ("b", 0.75, 0.9))
    ]
    result = compare_models(rows)
    assert list(result.table["acc_top3"]) == pytest.approx([0.9, 0.875])  # best model first
    header = result.markdown.splitlines()[0]
    assert header.rstrip(" |").endswith("top-3 acc")
    assert "| 0.90 " in result.markdown.splitlines()[2] + " "
    assert "0.88" in result.markdown.splitlines()[3]


def test_the_markdown_hides_the_ci_bounds_and_scales_params() -> None:
    """The CI bounds are in the table, not Markdown columns of their own; `params` shows in
    millions. Breakage caught: `unit` ignored (4105000.00) or the CI columns shown."""
    result = compare_models(
        [
            {
                "model": "m",
                "acc_top1": 0.8,
                "acc_top1_ci_low": 0.7,
                "acc_top1_ci_high": 0.9,
                "params": 4_105_000,
            }
        ]  # fmt: skip
    )
    header, _, row = result.markdown.splitlines()[:3]
    assert "acc_top1_ci_low" not in header and "params (M)" in header
    assert "80.0 % [70.0, 90.0]" in row and "4.11" in row
    assert {"acc_top1_ci_low", "acc_top1_ci_high"} <= set(result.table.columns)
