"""Adding a model is one registry entry in one module, its accuracy floors included.

A copy of the package gets one more `register(timm_spec(...))` appended to `ml/models/zoo.py`
and nothing else; a subprocess on that copy then sees the model's four assets, its floor check
with the entry's floor, its leaderboard input and its row in `food-assets models`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEW = "resnet18_extra"
#: Not any shipped floor, not chance (1.5 / 10 classes): only the entry can have given it.
FLOOR = 0.4321

ENTRY = f'''

register(
    timm_spec(
        "{NEW}",
        "resnet18",
        cam_layer="layer4",
        description="ResNet-18 (timm), added by a test in one module",
        accuracy_floors={{"sample": {FLOOR}}},
    )
)
'''

PROBE = f"""
import json
from typer.testing import CliRunner
from food_assets.defs.assets.evaluation import EvaluationReport, accuracy_check_result
from food_assets.cli import app
from food_assets.definitions import defs
from food_assets.defs.resources import QualityGates

graph = defs.resolve_asset_graph()
keys = sorted(k.to_user_string() for k in defs.resolve_all_asset_keys())
checks = sorted(
    [c.asset_key.to_user_string(), c.name] for c in graph.asset_check_keys
)
board = graph.get(__import__("dagster").AssetKey("leaderboard"))
parents = sorted(k.to_user_string() for k in board.parent_keys)
def report(acc):
    summary = {{"test/acc_top1": acc, "test/num_classes": 10}}
    return EvaluationReport("{NEW}", "sample", summary, 1.0, {{}})
at = accuracy_check_result(report({FLOOR}), QualityGates())
below = accuracy_check_result(report({FLOOR} - 1e-4), QualityGates())
listing = CliRunner().invoke(app, ["models"]).stdout
print(json.dumps({{
    "keys": keys, "checks": checks, "parents": parents,
    "floor": at.metadata["floor"].value, "passed_at": at.passed, "passed_below": below.passed,
    "listed": any(line.strip("│ ").startswith("{NEW} ") for line in listing.splitlines()),
}}))
"""


@pytest.mark.slow
def test_one_entry_in_one_module_brings_assets_floor_check_and_leaderboard_row(
    tmp_path: Path,
) -> None:
    """Breakages tried, each fails: the floor back in a table in the wiring (the check then
    uses chance, 0.15, not 0.4321); the leaderboard's inputs fixed to a list of names (no
    `evaluation_resnet18_extra` parent); a per-model asset module with its own list of names."""
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copytree(
        ROOT / "food_assets", copy / "food_assets", ignore=shutil.ignore_patterns("__pycache__")
    )
    zoo = copy / "food_assets" / "ml" / "models" / "zoo.py"
    zoo.write_text(zoo.read_text() + ENTRY)
    changed = [
        p.relative_to(copy).as_posix()
        for p in (copy / "food_assets").rglob("*.py")
        if p.read_bytes() != (ROOT / p.relative_to(copy)).read_bytes()
    ]
    assert changed == ["food_assets/ml/models/zoo.py"]  # one module, nothing else
    env = {
        **os.environ,
        "PYTHONPATH": str(copy),
        "DAGSTER_HOME": str(tmp_path),
        "FOOD_ASSETS_DATA_DIR": str(tmp_path / "data"),
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {f"{p}_{NEW}" for p in ("model", "evaluation", "gradcam", "onnx")} <= set(got["keys"])
    assert [f"evaluation_{NEW}", "accuracy_above_floor"] in got["checks"]
    assert f"evaluation_{NEW}" in got["parents"]
    assert got["floor"] == pytest.approx(FLOOR)
    assert got["passed_at"] is True and got["passed_below"] is False
    assert got["listed"]


@pytest.mark.slow
def test_training_receives_the_spec_not_its_name(tmp_path: Path) -> None:
    """An entry that is not in the registry trains when handed to `train_model` as a spec: the
    spec is the one source after the door (no lookup by name). Breakage tried: `plan_run` or
    `get_config_hash` looking the name up again (UnknownModelError for this unregistered
    entry), `_create_seeded_model` back on `create_model(name)` (the same)."""
    import dataclasses

    from food_assets.ml.models import get_model_spec, list_models
    from food_assets.ml.training import ComputeConfig, TrainConfig, train_model
    from food_assets.ml.training.checkpoints import get_config_hash
    from food_assets_tests.test_ml_training import make_tiny_splits

    spec = dataclasses.replace(get_model_spec("custom_cnn"), name="custom_cnn_unregistered")
    assert spec.name not in list_models()
    splits = make_tiny_splits(tmp_path / "images")
    cfg = TrainConfig(
        epochs=1, batch_size=8, image_size=32, warmup_epochs=0,
        early_stopping_patience=None, precise_bn_batches=0,
    )  # fmt: skip
    compute = ComputeConfig(accelerator="cpu")
    result = train_model(spec, splits, cfg, compute, tmp_path / "run", progress_bar=False)
    assert result.card.name == "custom_cnn_unregistered"
    assert get_config_hash(spec, splits, cfg, compute)[1]["model"] == "custom_cnn_unregistered"
