"""A tiny real run up to the `leaderboard` (and so the MLflow `champion`) in which one model
trains and every other declines at once.

The leaderboard reads every `evaluation_<name>`, so all of them must be materialized; the other
trainable models are pointed at a weights file that does not exist with `on_missing_weights:
skip` (a `FitSkipped` before anything is built or written), and the CLIP entries decline by
default here (no weights offline). Their evaluations are then `Skipped` values.
"""

from __future__ import annotations

from typing import Any

from food_assets_tests.conftest import tiny_run_config

MISSING_WEIGHTS = "/nonexistent/food_assets_test_weights.pth"


def leaderboard_selection(trained: str, *extra: str) -> list[str]:
    """The data assets, every model and evaluation, `extra` (e.g. `onnx_<trained>`) and the
    leaderboard."""
    from food_assets.ml.models import list_models

    selected = ["food_images_raw", "food_splits", *extra, "leaderboard"]
    return selected + [f"{p}_{n}" for n in list_models() for p in ("model", "evaluation")]


def leaderboard_run_config(trained: str, selection: list[str], **train: Any) -> dict:
    """`tiny_run_config` for `selection`, `trained` with `train` overrides, the others skipping."""
    ops = tiny_run_config(**{trained: train})["ops"]
    ops = {k: v for k, v in ops.items() if k in selection}
    for key, op in ops.items():
        if key.startswith("model_") and key != f"model_{trained}":
            op["config"].update(weights=MISSING_WEIGHTS, on_missing_weights="skip")
    return {"ops": ops}
