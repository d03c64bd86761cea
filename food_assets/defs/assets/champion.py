"""The `champion` alias from the leaderboard's evaluations: each model becomes a candidate from
Dagster's record of its blocking accuracy check, and `tracking.promote_champion` (the pure rule
`choose_champion` and the MLflow writes) moves the alias (ADR 0012). Apart from `evaluation`
because the candidates read Dagster's event log, not the evaluation's value alone.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from food_assets import layout
from food_assets.tracking import model_registry
from food_assets.tracking import runs as tracking


def _candidate(instance: Any, key: str, report: Any) -> tracking.Candidate:
    """The leaderboard's view of `evaluation_<name>`: its accuracy, its version, and the latest
    result of its blocking accuracy check as Dagster recorded it (it must be the check of the
    evaluation the leaderboard read: same run as the latest materialization)."""
    Candidate = tracking.Candidate
    model = layout.model_name_of(key) or key
    summary = getattr(report, "summary", None)
    if summary is None:  # a Skipped value: nothing was evaluated
        return Candidate(model, None, None, False, None, getattr(report, "reason", "skipped"))
    acc = float(summary.get("test/acc_top1", float("nan")))
    version = report.model_metadata.get(tracking.MODEL_VERSION_KEY)
    version = int(version) if isinstance(version, int | float | str) and str(version) else None
    asset_key = dg.AssetKey(layout.evaluation_asset(model))
    record = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(asset_key, layout.ACCURACY_CHECK)
    )
    latest = instance.get_latest_materialization_event(asset_key)
    evaluation = record.event.dagster_event.event_specific_data if record and record.event else None
    if evaluation is None or not hasattr(evaluation, "passed"):
        return Candidate(model, acc, None, False, version, f"no {layout.ACCURACY_CHECK} result")
    if latest is None or latest.run_id != record.run_id:
        return Candidate(model, acc, None, False, version, "check is not of the latest evaluation")
    floor_value = evaluation.metadata.get("floor")
    floor = float(getattr(floor_value, "value", floor_value)) if floor_value is not None else None
    reason = "" if evaluation.passed else f"{layout.ACCURACY_CHECK} failed"
    if version is None:
        reason = reason or "no registered model version"
    return Candidate(model, acc, floor, bool(evaluation.passed), version, reason)


def set_champion(
    context: Any, mlflow_resource: Any, evaluations: dict[str, Any]
) -> tracking.Candidate | None:
    """Point the `champion` alias at the best model whose evaluation passed its accuracy floor
    (`tracking.promote_champion`: the rule and the MLflow writes), from the candidates Dagster's
    check records give; adds the outcome to the asset's metadata."""
    import mlflow

    uri = getattr(mlflow_resource, "tracking_uri", None) or mlflow.get_tracking_uri()
    keys = sorted(evaluations)
    candidates = [_candidate(context.instance, k, evaluations[k]) for k in keys]
    temperatures = {
        c.model: float(getattr(evaluations[k], "temperature", 1.0))
        for c, k in zip(candidates, keys, strict=True)
    }
    champion = tracking.promote_champion(uri, candidates, temperatures)
    if champion is None:
        context.log.warning(
            "no champion: no model passed its accuracy floor with a registered version ("
            + "; ".join(f"{c.model}: {c.reason or 'not eligible'}" for c in candidates)
            + ")"
        )
        context.add_output_metadata({"champion": "none"})
        return None
    keep = model_registry.registered_model_name(champion.model)
    base = tracking.ui_url(uri, getattr(mlflow_resource, "ui_url", None))
    context.log.info(f"champion: {keep} version {champion.version} (top-1 {champion.acc:.3f})")
    context.add_output_metadata(
        {
            "champion": champion.model,
            "champion_uri": f"models:/{keep}@{model_registry.CHAMPION}",
            "champion_version": dg.MetadataValue.url(
                tracking.model_version_link(base, keep, champion.version)
            ),
        }
    )
    return champion
