"""Helpers every asset module uses: user errors as clean failures, metadata for the UI."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from food_assets.ml.errors import FoodAssetsError
from food_assets.ml.quality import CheckOutcome


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """A `FoodAssetsError` becomes a `dagster.Failure` with its message: no traceback for a
    user mistake in the UI or the CLI, and no retry of something that cannot succeed."""
    try:
        yield
    except FoodAssetsError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def md_table(frame: pd.DataFrame, *, max_rows: int = 50, floatfmt: str = ".4g") -> dg.MetadataValue:
    """A DataFrame as a Markdown table (the first `max_rows` rows)."""
    shown = frame.head(max_rows)
    text = shown.to_markdown(index=False, floatfmt=floatfmt)
    if len(frame) > max_rows:
        text += f"\n\n… {len(frame) - max_rows} more rows"
    return dg.MetadataValue.md(text)


def md_image(path: str | Path, *, alt: str = "figure") -> dg.MetadataValue:
    """A PNG inline in the asset's metadata (the UI renders Markdown images from data URIs)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def plain(value: Any) -> Any:
    """Make a value safe for Dagster metadata (numpy scalars, paths, None)."""
    if value is None:
        return dg.MetadataValue.text("n/a")
    if isinstance(value, Path):
        return dg.MetadataValue.path(str(value))
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()
    return value


#: How every check that evaluated nothing begins its description.
NOT_EVALUATED = "not evaluated: "


def check_result(
    outcome: CheckOutcome, *, metadata: dict[str, Any] | None = None, **kwargs: Any
) -> dg.AssetCheckResult:
    """A pure check decision (`food_assets.ml.quality`) as Dagster's check result; `kwargs` go
    to `AssetCheckResult` (check_name, severity)."""
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=outcome.description,
        metadata={**outcome.metadata, **(metadata or {})},
        **kwargs,
    )


def not_evaluated(reason: str, *, check_name: str | None = None) -> dg.AssetCheckResult:
    """The result of a check that evaluated nothing (its model was skipped, the model has no
    Grad-CAM layer or no ONNX export). Not a pass: `passed=False`, at WARN severity, which
    Dagster does not let block downstream assets, so `model_comparison` still runs and lists
    the skipped model (ADR 0002, ADR 0007). Dagster 1.13 has no "no result" for a declared
    check: a step that yields none fails."""
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=NOT_EVALUATED + reason,
        metadata={"evaluated": False, "reason": reason},
    )


@dataclass(frozen=True)
class Skipped:
    """The value of an asset that could not run for a stated reason (CLIP without weights on
    the sample source). Downstream assets pass it on, so the run completes, the UI shows why,
    and `model_comparison` still lists every model."""

    name: str
    reason: str


def skipped_output(context: dg.AssetExecutionContext, name: str, reason: str) -> dg.Output:
    context.log.warning(f"{context.asset_key.to_user_string()} skipped: {reason}")
    return dg.Output(
        Skipped(name=name, reason=reason),
        metadata={"skipped": True, "reason": reason},
        tags={"food_assets/skipped": "true"},
    )
