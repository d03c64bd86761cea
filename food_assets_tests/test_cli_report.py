"""How the `food-assets` run summary names a check's outcome."""

from __future__ import annotations

import dagster as dg
import pytest

from food_assets.cli.run import _check_status


def _evaluation(passed: bool, severity: dg.AssetCheckSeverity, description: str):
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("evaluation_clip_zero_shot"),
        check_name="accuracy_above_floor",
        passed=passed,
        severity=severity,
        description=description,
    )


@pytest.mark.parametrize(
    ("passed", "severity", "shown"),
    [
        (True, dg.AssetCheckSeverity.ERROR, "passed"),
        (False, dg.AssetCheckSeverity.ERROR, "FAILED"),
        (False, dg.AssetCheckSeverity.WARN, "warning: not evaluated: no CLIP weights"),
    ],
)
def test_check_status_tells_a_warning_from_a_failed_gate(passed, severity, shown) -> None:
    """Breakage caught: a skipped model's 'not evaluated' (a WARN failure) printed as FAILED,
    or a failed ERROR gate printed as anything milder."""
    assert _check_status(_evaluation(passed, severity, "not evaluated: no CLIP weights")) == shown
