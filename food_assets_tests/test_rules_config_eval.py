"""The evaluation asset's config reaches `evaluate_bundle`, and its metadata reports what the
figures were computed with (read back from the result, not echoed from the config).

A real Dagster run: sample data, a tiny custom_cnn, its evaluation with non-default settings.
"""

from __future__ import annotations

import json

import dagster as dg
import pytest

pytestmark = pytest.mark.slow  # trains a tiny model in a real Dagster run (~20 s on 2 cores)


def _materialize(data_dir, evaluation_config: dict):
    from food_assets.definitions import build_definitions, default_resources
    from food_assets.defs.resources import QualityGates

    resources = default_resources(str(data_dir))
    resources["quality"] = QualityGates(accuracy={"sample/*": 0.0})
    defs = build_definitions(resources, models=["custom_cnn"])
    keep = {"food_images_raw", "food_splits", "model_custom_cnn", "evaluation_custom_cnn"}
    assets = [a for a in defs.assets if {k.to_user_string() for k in a.keys} & keep]
    config = {
        "food_images_raw": {
            "config": {
                "sample_num_classes": 3,
                "sample_images_per_class": 16,
                "sample_image_size": 48,
            }
        },  # fmt: skip
        "model_custom_cnn": {"config": {"epochs": 1, "image_size": 32, "batch_size": 16}},
        "evaluation_custom_cnn": {"config": evaluation_config},
    }
    result = dg.materialize(assets, resources=resources, run_config={"ops": config})
    meta = result.asset_materializations_for_node("evaluation_custom_cnn")[0].metadata
    return result, {k: getattr(v, "value", v) for k, v in meta.items()}


def test_evaluation_settings_reach_the_result_and_its_metadata(tmp_path) -> None:
    """seed 7, 150 resamples, TTA flip: each shows in the summary, metrics.json and the
    metadata; the headline accuracy is recomputed from the predictions table. Breakage seen
    failing: the asset passing `seed=0` / `tta="none"` to `evaluate_bundle`, the metadata's
    `bootstrap_seed` read from the config default."""
    result, meta = _materialize(
        tmp_path / "data", {"seed": 7, "n_bootstrap": 150, "tta": "flip", "batch_size": 5}
    )
    report = result.output_for_node("evaluation_custom_cnn")
    s = report.summary
    assert (s["bootstrap/seed"], s["bootstrap/resamples"], s["tta/views"]) == (7, 150, 2)
    assert (meta["bootstrap_seed"], meta["bootstrap_resamples"], meta["tta_views"]) == (7, 150, 2)
    assert "acc_top1_tta" in meta
    written = json.loads(report.files["metrics"].read_text())
    assert (written["bootstrap/seed"], written["tta/views"]) == (7, 2)
    import pandas as pd

    table = pd.read_parquet(report.files["predictions"])
    truth, pred = table["true_class"], table["top1_class"]
    assert s["test/acc_top1"] == pytest.approx(float((truth == pred).mean()))
