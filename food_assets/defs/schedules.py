"""Jobs and the scheduled re-evaluation."""

from __future__ import annotations

import dagster as dg
from dagster_mlflow import end_mlflow_on_run_finished

from food_assets.layout import LEADERBOARD_ASSET

#: Every trained model (and the data it needs).
train_all_job = dg.define_asset_job(
    "train_all",
    selection=dg.AssetSelection.groups("models").upstream(),
    description="Materialize the data assets and every model_* asset.",
    # Closes the Dagster run's parent MLflow run (dagster-mlflow leaves it open otherwise).
    hooks={end_mlflow_on_run_finished},
)

#: Re-run evaluation (and its checks) on the latest checkpoints; a failing check fails the run.
reevaluate_job = dg.define_asset_job(
    "reevaluate",
    selection=dg.AssetSelection.groups("evaluation"),
    description="Re-evaluate the latest checkpoints and rebuild the leaderboard; checks included.",
    hooks={end_mlflow_on_run_finished},
)

#: Nightly at 03:00 UTC; stopped by default, switch it on in the UI (Automation -> Schedules).
REEVALUATE_CRON = "0 3 * * *"


def sensors() -> list[dg.SensorDefinition]:
    """The automation sensor that evaluates `leaderboard`'s automation condition (eager: after
    its evaluations or exports update, never past a failed blocking check; ADR 0011). Stopped
    by default like the schedule: switch it on in the UI (Automation -> Sensors)."""
    return [
        dg.AutomationConditionSensorDefinition(
            "leaderboard_automation",
            target=dg.AssetSelection.assets(LEADERBOARD_ASSET),
            default_status=dg.DefaultSensorStatus.STOPPED,
            description="Rebuild the leaderboard when an evaluation or export updates.",
        ),
    ]


def jobs() -> list:
    return [train_all_job, reevaluate_job]


def schedules() -> list[dg.ScheduleDefinition]:
    return [
        dg.ScheduleDefinition(
            name="nightly_reevaluation",
            job=reevaluate_job,
            cron_schedule=REEVALUATE_CRON,
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description="Re-evaluate every model on its latest checkpoint with the asset checks.",
        )
    ]
