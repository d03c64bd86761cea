"""A model registered at run time gets its four assets and trains, with no other code touched;
a model whose fit declines is a `Skipped` value that leaves no MLflow run behind."""

from __future__ import annotations

import dataclasses

import dagster as dg
import mlflow
import pytest

from food_assets.definitions import build_definitions
from food_assets.defs.assets._common import Skipped
from food_assets.ml.models import get_model_spec, list_models
from food_assets.ml.models.bundle import load_bundle
from food_assets.ml.models.registry import register, unregister

EXTRA = "extra_tiny_cnn"
PREFIXES = ("model", "evaluation", "gradcam", "onnx")


@pytest.fixture
def extra_entry():
    """One more registry entry (custom_cnn's data under another name), removed afterwards."""
    spec = dataclasses.replace(
        get_model_spec("custom_cnn"), name=EXTRA, description="registered by a test"
    )
    register(spec)
    yield spec
    unregister(EXTRA)


def test_an_entry_registered_at_run_time_gets_all_its_assets(extra_entry, resources) -> None:
    """`build_definitions(models=list_models())` makes model_/evaluation_/gradcam_/onnx_ for the
    new entry, with the checks of each, next to the import-time ones. Breakage tried:
    `build_definitions` ignoring `models` (the import-time lists do not know the entry)."""
    defs = build_definitions(resources, models=list_models())
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {f"{p}_{EXTRA}" for p in PREFIXES} <= keys
    for name in list_models():
        assert {f"{p}_{name}" for p in PREFIXES} <= keys
    graph = defs.resolve_asset_graph()
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert (f"evaluation_{EXTRA}", "accuracy_above_floor") in checks
    assert (f"onnx_{EXTRA}", "onnx_parity") in checks
    # The default build is unchanged: the import-time entries only.
    plain = {k.to_user_string() for k in build_definitions(resources).resolve_all_asset_keys()}
    assert f"model_{EXTRA}" not in plain and "model_custom_cnn" in plain


@pytest.mark.slow
def test_an_entry_registered_at_run_time_trains_through_the_generic_asset(
    extra_entry, resources, small_sample_config, mlflow_isolated
) -> None:
    """The generic `model_<name>` asset trains the new entry: its run config is derived from
    its settings class, its bundle names it, one nested MLflow run records it."""
    defs = build_definitions(resources, models=list_models())
    tiny = {"epochs": 1, "image_size": 32, "batch_size": 16}
    result = dg.materialize(
        list(defs.assets),
        selection=["food_images_raw", "food_splits", f"model_{EXTRA}"],
        resources=resources,
        run_config={"ops": {**small_sample_config, f"model_{EXTRA}": {"config": tiny}}},
        raise_on_error=False,
    )
    assert result.success, [e.step_key for e in result.all_events if e.is_step_failure]
    value = result.output_for_node(f"model_{EXTRA}")
    assert value.name == EXTRA and value.family == "scratch"
    _, card = load_bundle(value.bundle_dir)
    assert card.name == EXTRA and card.preprocess.input_size == 32
    run = mlflow.MlflowClient().get_run(value.mlflow_run_id)
    assert run.data.params["model"] == EXTRA and run.data.params["epochs"] == "1"
    assert run.data.tags["mlflow.parentRunId"]


@pytest.mark.slow
def test_a_model_without_weights_is_skipped_and_leaves_no_mlflow_run(
    resources, small_sample_config, mlflow_isolated
) -> None:
    """ViT-L/14 offline: `model_clip_vit_l14_zero_shot` is a `Skipped` value whose reason names
    the `checkpoint` fix, and the nested MLflow run it was given is gone. Breakages tried,
    each fails: `FitSkipped` not caught in the asset (the step fails); the nested run kept
    (a FAILED run per skipped model in the tracking UI)."""
    defs = build_definitions(resources)
    name = "model_clip_vit_l14_zero_shot"
    result = dg.materialize(
        list(defs.assets),
        selection=["food_images_raw", "food_splits", name],
        resources=resources,
        run_config={"ops": small_sample_config},
        raise_on_error=False,
    )
    assert result.success, [e.step_key for e in result.all_events if e.is_step_failure]
    value = result.output_for_node(name)
    assert isinstance(value, Skipped) and "`checkpoint`" in value.reason
    assert "ViT-L-14" in value.reason
    meta = result.asset_materializations_for_node(name)[0].metadata
    assert meta["skipped"].value is True
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("food_assets")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.asset = '{name}'")
    assert runs == []
