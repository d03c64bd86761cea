"""`batch_predictions`: the champion scores each drop of new photos, one partition per drop.

A drop is a sub-folder of the drops folder or object-store prefix (`food_assets.defs.drops`;
`BatchPredictionsConfig.source`, default FOOD_ASSETS_DROPS_DIR, else `<data dir>/drops`). The
`new_drops` sensor adds a partition for each new sub-folder and requests its run. The model
is resolved and loaded as `food-assets serve` does (`food_assets.server.models.load_served`:
the one resolver, the serving rule), by default `champion`. Output:
`artifacts/batch_predictions/<drop>/predictions.parquet` (path, label, probability, top-k,
model, model version) and `unreadable.parquet` (path, reason): a photo that does not decode
is listed, never a failed run. The `low_confidence_share` check warns when too many top-1
probabilities are low.
"""

# No `from __future__ import annotations`: Dagster reads the real annotation objects.

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from food_assets import layout
from food_assets.defs.assets._common import (
    code_version,
    md_table,
    not_evaluated,
    table_metadata,
    user_errors,
)
from food_assets.defs.drops import DROPS_ENV, default_source, list_drops, local_drop
from food_assets.defs.resources import ArtifactStore

BATCH_ASSET = "batch_predictions"
BATCH_GROUP = "serving"
LOW_CONFIDENCE_CHECK = "low_confidence_share"
PREDICTIONS_FILE = "predictions.parquet"
UNREADABLE_FILE = "unreadable.parquet"

#: One partition per drop of new photos (added by the `new_drops` sensor, or by hand in the UI).
DROPS = dg.DynamicPartitionsDefinition(name="drops")


class BatchPredictionsConfig(dg.Config):
    source: str | None = Field(
        default=None,
        description="the drops folder (default FOOD_ASSETS_DROPS_DIR, else "
        "<data dir>/drops); the partition key is the drop's sub-folder",
    )
    model: str = Field(
        default="champion", description="champion, a models:/ URI, a model name or a path"
    )
    precision: str = Field(default="auto", description="auto, fp32 or int8 (the serving rule)")
    top_k: int = Field(default=5, ge=1, le=100)
    batch_size: int = Field(default=32, ge=1, le=1024)
    low_confidence: float = Field(
        default=0.5, gt=0, le=1, description="a top-1 probability under this is low confidence"
    )
    max_low_confidence_share: float = Field(
        default=0.3, ge=0, le=1, description="the check warns above this share of low ones"
    )


@dg.asset(
    name=BATCH_ASSET,
    group_name=BATCH_GROUP,
    partitions_def=DROPS,
    deps=[dg.AssetKey(layout.LEADERBOARD_ASSET)],  # scored by the champion it promotes
    kinds={"parquet"},
    check_specs=[
        dg.AssetCheckSpec(
            LOW_CONFIDENCE_CHECK,
            asset=BATCH_ASSET,
            description="WARN when the share of top-1 probabilities under `low_confidence` is "
            "over `max_low_confidence_share` (new photos unlike the training data?)",
        )
    ],
    code_version=code_version(
        "batch", modules=["food_assets.ml.inference", "food_assets.server.models"]
    ),
    description="The champion's predictions for one drop of new photos (Parquet), unreadable "
    "files listed with their reasons.",
)
def batch_predictions(
    context: dg.AssetExecutionContext, config: BatchPredictionsConfig, artifact_store: ArtifactStore
):  # -> dg.MaterializeResult; unannotated: with a check spec Dagster would read it as "Nothing"

    from food_assets.ml.inference.batch import save_parquet, score_drop
    from food_assets.server.models import load_served

    if not context.has_partition_key:
        raise dg.Failure(
            "batch_predictions scores one drop of photos: launch it with a partition "
            "(`dg launch --assets batch_predictions --partition <drop>`, or the new_drops sensor)"
        )
    drop = context.partition_key
    source = config.source or default_source(artifact_store.data_dir)
    with user_errors():
        folder = local_drop(source, drop, artifact_store.data_dir)
    if not folder.is_dir():
        raise dg.Failure(f"drop {drop!r} is not a sub-folder of {source}")
    with user_errors():
        model = load_served(config.model, Path(artifact_store.data_dir), config.precision)
        scored = score_drop(
            model.predictor,
            folder,
            model_version=model.version,
            top_k=config.top_k,
            batch_size=config.batch_size,
        )
        out = artifact_store.asset_dir(BATCH_ASSET) / drop
        save_parquet(scored.predictions, out / PREDICTIONS_FILE)
        save_parquet(scored.unreadable, out / UNREADABLE_FILE)
    metadata: dict[str, Any] = {
        **table_metadata(scored.predictions),
        "drop": drop,
        "source": f"{source.rstrip('/')}/{drop}",
        "model": model.name,
        "model_source": model.source,
        "model_version": model.version or "n/a",
        "served": f"{model.backend} {model.precision} ({model.reason})",
        "unreadable_files": len(scored.unreadable),
        "parquet": dg.MetadataValue.path(artifact_store.storage.location(out / PREDICTIONS_FILE)),
    }
    if len(scored.unreadable):
        metadata["unreadable"] = md_table(scored.unreadable)
    context.log.info(
        f"drop {drop}: {len(scored.predictions)} predicted, {len(scored.unreadable)} unreadable"
    )
    value = {
        "drop": drop,
        "predictions": f"{drop}/{PREDICTIONS_FILE}",
        "rows": len(scored.predictions),
        "unreadable": len(scored.unreadable),
    }
    check = _low_confidence(scored, config)
    return dg.MaterializeResult(value=value, metadata=metadata, check_results=[check])


def _low_confidence(scored: Any, config: BatchPredictionsConfig) -> dg.AssetCheckResult:
    share = scored.low_confidence_share(config.low_confidence)
    if share is None:
        return not_evaluated("no readable photo in this drop", check_name=LOW_CONFIDENCE_CHECK)
    return dg.AssetCheckResult(
        check_name=LOW_CONFIDENCE_CHECK,
        passed=share <= config.max_low_confidence_share,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "low_confidence_share": float(share),
            "threshold": config.low_confidence,
            "max_share": config.max_low_confidence_share,
            "predictions": len(scored.predictions),
        },
    )


batch_predictions_job = dg.define_asset_job(
    "batch_predictions_job",
    selection=dg.AssetSelection.assets(BATCH_ASSET),
    description="Score one drop of new photos with the champion.",
)


@dg.sensor(
    name="new_drops",
    job=batch_predictions_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=f"A new sub-folder of the drops folder ({DROPS_ENV}, else <data dir>/drops) "
    "becomes a `drops` partition and a batch_predictions run.",
)
def new_drops(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    known = set(context.instance.get_dynamic_partitions(DROPS.name))
    new = [d for d in list_drops(default_source()) if d not in known]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=d, run_key=f"drop:{d}") for d in new],
        dynamic_partitions_requests=[DROPS.build_add_request(new)] if new else [],
    )
