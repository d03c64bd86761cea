"""The code location loads, and the shipped run configs fit its schema."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from food_assets.definitions import defs
from food_assets.ml.models import list_models

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_every_registry_model_has_its_assets():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for name in list_models():
        assert {f"model_{name}", f"evaluation_{name}", f"onnx_{name}", f"gradcam_{name}"} <= keys
    assert {"food_images_raw", "food_splits", "leaderboard"} <= keys


def test_jobs_schedule_and_resources():
    assert defs.resolve_job_def("train_all") and defs.resolve_job_def("reevaluate")
    schedule = defs.resolve_schedule_def("nightly_reevaluation")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert {"artifact_store", "compute", "quality", "mlflow"} <= set(defs.resources)


@pytest.mark.parametrize(
    "files", [["sample.yaml"], ["food101.yaml"], ["food101.yaml", "food101_ddp.yaml"]]
)
def test_shipped_run_configs_validate(files):
    config: dict = {}
    for name in files:
        config = _merge(config, yaml.safe_load((CONFIGS / name).read_text()))
    job = defs.resolve_implicit_global_asset_job_def()
    result = dg.validate_run_config(job, config)
    assert result  # raises DagsterInvalidConfigError with the offending key otherwise
