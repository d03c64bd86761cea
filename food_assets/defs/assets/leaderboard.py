"""`leaderboard`: one table of every evaluated model (the columns `compare.LEADERBOARD`
defines), its Markdown, CSV and trade-off plot, and the `champion` alias it moves
(`champion.set_champion`, ADR 0012).
"""

# No `from __future__ import annotations`: Dagster reads the real annotation objects.

from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from food_assets import layout
from food_assets.defs.assets._common import (
    REEVALUATION_FRESHNESS,
    Skipped,
    code_version,
    file_ref,
    md_table,
    user_errors,
)
from food_assets.defs.assets._pictures import picture
from food_assets.defs.assets.champion import set_champion
from food_assets.defs.assets.evaluation import EVALUATION_GROUP, EvaluationReport
from food_assets.defs.resources import ArtifactStore
from food_assets.ml import artifacts
from food_assets.ml.models import list_models
from food_assets.tracking import runs as tracking

if TYPE_CHECKING:  # imported lazily at run time: the ml layer pulls in torch and matplotlib
    from food_assets.ml.evaluation import ComparisonResult

#: Code version (ADR 0011): the leaderboard's table.
LEADERBOARD_CODE_VERSION = code_version(
    "leaderboard",
    modules=[
        "food_assets.ml.evaluation.compare",
        "food_assets.ml.evaluation.plots",
        "food_assets.ml.inference.serving",  # which export's latency the table shows
    ],
)

#: The leaderboard follows its evaluations and exports when the automation sensor is on
#: (`leaderboard_automation`, stopped by default), never past a failed blocking check (ADR 0007).
LEADERBOARD_AUTOMATION = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager, blocking checks passed")


@dg.asset(
    name=layout.LEADERBOARD_ASSET,
    group_name=EVALUATION_GROUP,
    ins={layout.evaluation_asset(n): dg.AssetIn(layout.evaluation_asset(n)) for n in list_models()},
    # Runs after the exports so that it can report their measured CPU latency.
    deps=[dg.AssetKey(layout.onnx_asset(n)) for n in list_models()],
    kinds={"pandas", "csv"},
    description="One table of every evaluated model: accuracy with CI, macro-F1, ECE, size, "
    "compute, train time and CPU latency; Markdown, CSV and a trade-off plot.",
    code_version=LEADERBOARD_CODE_VERSION,
    freshness_policy=REEVALUATION_FRESHNESS,
    automation_condition=LEADERBOARD_AUTOMATION,
)
def leaderboard(
    context: dg.AssetExecutionContext,
    artifact_store: ArtifactStore,
    mlflow: dg.ResourceParam[Any],
    **evaluations: Any,
) -> dg.MaterializeResult:
    from food_assets.ml.evaluation import compare_models, save_comparison

    rows, skipped = [], []
    for key, report in sorted(evaluations.items()):
        name = layout.model_name_of(key)
        if isinstance(report, Skipped):
            skipped.append({"model": name, "reason": report.reason})
        else:
            rows.append(_comparison_row(name, report, artifact_store))
    with user_errors():
        out = artifact_store.asset_dir(layout.LEADERBOARD_ASSET)
        result = compare_models(rows)
        files = save_comparison(result, out)
        artifacts.write_json(layout.skipped_file(artifact_store.root), skipped)
    with user_errors(), tracking.server_errors():
        set_champion(context, mlflow, evaluations)  # the registry's alias (ADR 0012)
    metadata = _comparison_metadata(result, files, len(rows), skipped, artifact_store)
    return dg.MaterializeResult(value=result.table, metadata=metadata)


def _comparison_row(name: str, report: EvaluationReport, store: ArtifactStore) -> dict[str, Any]:
    """One leaderboard row, column by column as `compare.LEADERBOARD` says where each comes
    from: the evaluation's test summary, the model's metadata, the export's latency."""
    from food_assets.ml.evaluation.compare import LEADERBOARD

    meta = report.model_metadata
    row: dict[str, Any] = {"model": name}
    for col in LEADERBOARD:
        if col.source == "evaluation":
            row[col.key] = report.summary.get(f"test/{col.key}")
        elif col.source == "model":
            row[col.key] = meta.get(col.key)
    return {**row, **_latency_columns(store, name)}


def _comparison_metadata(
    result: "ComparisonResult",
    files: dict[str, Path],
    num_models: int,
    skipped: list[dict[str, str]],
    store: ArtifactStore,
) -> dict[str, Any]:
    from food_assets.ml.evaluation.compare import LEADERBOARD

    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(c.key, "string" if c.text else "float", description=c.header or "")
            for c in LEADERBOARD
        ]
    )
    metadata: dict[str, Any] = {
        "dagster/column_schema": schema,  # the same columns as the table and the Markdown
        "comparison": dg.MetadataValue.md(result.markdown),
        "num_models": num_models,
        "csv": dg.MetadataValue.path(store.location(files["csv"])),
        "plot": file_ref(files["plot"], store) if files.get("plot") else "n/a",
    }
    if files.get("plot"):
        metadata.update(picture(Path(files["plot"]).stem, files["plot"], store))
    if skipped:
        import pandas as pd

        metadata["skipped_models"] = md_table(pd.DataFrame(skipped))
    return metadata


def _latency_columns(store: ArtifactStore, name: str) -> dict[str, Any]:
    """CPU latency measured by `onnx_<name>` (eager, ORT fp32, ORT int8 at batch 1 and 32, the
    thread count) and the export `predict` serves by default, with its batch-1 latency as
    `latency_ms` (`serving.latency_summary`); all None when the model was not exported.

    `onnx_<name>` is a dependency, not an input, so its latency.json and int8.json are fetched
    here (a no-op for a local root)."""
    import json

    from food_assets.ml.export.variants import VARIANTS_JSON
    from food_assets.ml.inference.serving import latency_summary

    def read(path: Path) -> Any:
        store.fetch(layout.onnx_asset(name), prefix=path.name, missing_ok=True)
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError):
            return None

    rows = read(layout.latency_file(store.root, name))
    record = read(layout.int8_record_file(store.root, name))
    # The OpenVINO variants' gates (ADR 0021), written beside latency.json by onnx_<name>.
    variants = read(layout.latency_file(store.root, name).with_name(VARIANTS_JSON))
    return latency_summary(
        rows if isinstance(rows, list) else None,
        record if isinstance(record, dict) else None,
        variants if isinstance(variants, dict) else None,
    )
