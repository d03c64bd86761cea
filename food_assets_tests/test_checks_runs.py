"""Every asset check fails when its condition is false, through real Dagster runs: a failed
ERROR check fails the run and blocks what is downstream; a check that evaluated nothing (a
skipped model) is a WARN failure that blocks nothing (ADR 0002, ADR 0007).

The split checks cannot fail on anything `food_images_raw` produces (`make_splits` keeps
copies together), so the leaky splits come from a patched `make_splits`: the real `food_splits`
asset writes them, the real checks read them back.
"""

from __future__ import annotations

import copy

import dagster as dg
import pandas as pd
import pytest
import torch

from food_assets.definitions import build_definitions
from food_assets.defs.assets import data
from food_assets.defs.assets.models import MODEL_ASSETS
from food_assets.defs.resources import QualityGates
from food_assets.ml.models import get_model_spec, list_models
from food_assets_tests.rerun import rematerialized_export

pytestmark = pytest.mark.slow

TRAINED = [n for n in list_models() if get_model_spec(n).family in ("scratch", "transfer")]
SKIPPED = [n for n in list_models() if n not in TRAINED]  # CLIP: no weights on the sample
SPLIT_CHECKS = (
    "every_class_in_every_split",
    "no_image_in_two_splits",
    "no_content_leak_train_test",
)
WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR


def _evaluations(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def _blocked(result) -> list[str]:
    """Steps planned in the run that never started: Dagster logs "Dependencies for step ...
    failed ... Not executing" and records no event for them."""
    return [k for k in result.dagster_run.step_keys_to_execute if result.is_node_untouched(k)]


# --------------------------------------------------------------------------------------------
# food_splits: a leaky manifest fails its check and blocks training


def _two_splits(frame: pd.DataFrame) -> pd.DataFrame:
    # One training image listed again in val: same path, two splits (no test leak: val is on
    # the training side).
    extra = frame[frame.split == "train"].head(1).assign(split="val")
    return pd.concat([frame, extra], ignore_index=True)


def _content_leak(frame: pd.DataFrame) -> pd.DataFrame:
    # A test image whose bytes are a training image's: another path, the same SHA-256.
    frame = frame.copy()
    test_row = frame.index[frame.split == "test"][0]
    frame.loc[test_row, "sha256"] = frame.loc[frame.split == "train", "sha256"].iloc[0]
    return frame


def _class_missing(frame: pd.DataFrame) -> pd.DataFrame:
    # The first class loses its val images.
    first = sorted(frame.label.unique())[0]
    return frame[~((frame.label == first) & (frame.split == "val"))].reset_index(drop=True)


LEAKS = {
    "no_image_in_two_splits": (_two_splits, "1 image(s) in more than one split"),
    "no_content_leak_train_test": (_content_leak, "1 test image(s) identical to a train/val image"),
    "every_class_in_every_split": (_class_missing, "missing: {first} (no val)"),
}


@pytest.mark.parametrize("failing", list(LEAKS))
def test_a_leaky_split_fails_its_check_and_blocks_training(
    failing, monkeypatch, resources, small_sample_config, mlflow_isolated
):
    """A `make_splits` that writes a leaky manifest: exactly that check fails at ERROR, the run
    fails, and `model_custom_cnn` is not trained. Catches a split check that always passes
    (or whose decision is flipped), and a split check that is not `blocking=True` (the model
    would then train in the same run)."""
    leak, description = LEAKS[failing]
    real = data.make_splits

    def leaky(manifest, **kwargs):
        frame, class_names, dropped = real(manifest, **kwargs)
        return leak(frame), class_names, dropped

    monkeypatch.setattr(data, "make_splits", leaky)
    model = next(a for a in MODEL_ASSETS if a.key == dg.AssetKey("model_custom_cnn"))
    tiny = {"epochs": 1, "image_size": 32, "batch_size": 16, "limit_train_batches": 1.0}
    result = dg.materialize(
        [
            data.food_images_raw,
            data.food_splits,
            *(getattr(data, c) for c in SPLIT_CHECKS),
            model,
        ],
        resources=resources,
        run_config={"ops": {**small_sample_config, "model_custom_cnn": {"config": tiny}}},
        raise_on_error=False,
    )
    # The leak went through the real asset: the manifest it wrote is the leaky one.
    frame = result.output_for_node("food_splits").frame()
    first = sorted(frame.label.unique())[0]
    evaluations = _evaluations(result)
    assert {c: evaluations[("food_splits", c)].passed for c in SPLIT_CHECKS} == {
        c: c != failing for c in SPLIT_CHECKS
    }
    failed = evaluations[("food_splits", failing)]
    assert failed.severity == ERROR
    assert failed.description == description.format(first=first)
    assert not result.success
    assert result.get_failed_step_keys() == {f"food_splits_{failing}"}
    assert "model_custom_cnn" not in _materialized(result)
    assert _blocked(result) == ["model_custom_cnn"]


# --------------------------------------------------------------------------------------------
# a skipped model: its checks report "not evaluated" at WARN and block nothing


def test_a_skipped_models_checks_fail_at_warn_and_block_nothing(
    resources, small_sample_config, mlflow_isolated
):
    """`model_clip_zero_shot` is skipped (no CLIP weights here). Its evaluation, Grad-CAM and
    ONNX checks (parity and int8) must each report a WARN failure "not evaluated: ...", and the
    blocking accuracy check failing at WARN must not stop `onnx_clip_zero_shot` (downstream of
    the evaluation): the run succeeds. Catches `passed=True` for a skipped model (the old
    behaviour), and `severity=ERROR` (which would fail the run and block the export)."""
    defs = build_definitions(resources)
    name = "clip_zero_shot"
    keys = [f"{p}_{name}" for p in ("model", "evaluation", "gradcam", "onnx")]
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.assets("food_images_raw", "food_splits", *keys),
        resources=resources,
        run_config={"ops": small_sample_config},
        raise_on_error=False,
    )
    assert result.success
    assert set(keys) <= _materialized(result) and _blocked(result) == []
    evaluations = _evaluations(result)
    for asset, check in [
        (f"evaluation_{name}", "accuracy_above_floor"),
        (f"gradcam_{name}", "gradcam_sanity"),
        (f"onnx_{name}", "onnx_parity"),
        (f"onnx_{name}", "int8_accuracy"),
    ]:
        evaluation = evaluations[(asset, check)]
        assert (evaluation.passed, evaluation.severity) == (False, WARN), asset
        assert evaluation.description.startswith(f"not evaluated: model_{name} was skipped: "), (
            evaluation.description
        )


# --------------------------------------------------------------------------------------------
# The shared graph run: the comparison rule (ADR 0007), accuracy floors and ONNX parity


def test_the_graph_run_lists_skipped_models_and_their_checks_did_not_pass(graph_run):
    """In the full graph run the CLIP models are skipped: every one of their checks is a WARN
    "not evaluated" failure, and `leaderboard` is still materialized and lists them.
    Catches a skipped model's check reporting a pass, and a WARN failure hiding the comparison."""
    result = graph_run["result"]
    assert result.success
    evaluations = _evaluations(result)
    for name in SKIPPED:
        for asset, check in [
            (f"evaluation_{name}", "accuracy_above_floor"),
            (f"gradcam_{name}", "gradcam_sanity"),
            (f"onnx_{name}", "onnx_parity"),
            (f"onnx_{name}", "int8_accuracy"),
        ]:
            evaluation = evaluations[(asset, check)]
            assert (evaluation.passed, evaluation.severity) == (False, WARN), (asset, check)
            assert evaluation.description.startswith("not evaluated: "), (asset, check)
    assert "leaderboard" in _materialized(result)
    table = result.output_for_node("leaderboard")
    assert sorted(table["model"]) == sorted(TRAINED)
    meta = result.asset_materializations_for_node("leaderboard")[0].metadata
    for name in SKIPPED:
        assert name in meta["skipped_models"].value


def _reevaluate(graph_run, resources, names):
    """Re-evaluate `names` and rebuild the comparison on the shared run's instance."""
    defs = build_definitions(resources)
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.assets(*(f"evaluation_{n}" for n in names), "leaderboard"),
        resources=resources,
        instance=graph_run["instance"],
        raise_on_error=False,
        run_config={"ops": {f"evaluation_{n}": {"config": {"n_bootstrap": 200}} for n in names}},
    )


def test_one_models_failed_accuracy_gate_hides_the_comparison_a_skip_does_not(
    graph_run, mlflow_isolated
):
    """ADR 0007's rule, both sides, in runs that also hold a skipped model's evaluation (a WARN
    "not evaluated" failure). Floor at the measured accuracy: the comparison is rebuilt. Floor
    above it: the ERROR check fails the run and `leaderboard` is not materialized.
    Catches the accuracy check losing `blocking=True` or ERROR severity, and a skipped model's
    WARN failure blocking the comparison."""
    name = "custom_cnn"
    acc = graph_run["result"].output_for_node(f"evaluation_{name}").summary["test/acc_top1"]
    outcomes = {}
    for label, floor in (("at", acc), ("above", acc + 0.01)):
        gates = QualityGates(accuracy={"sample/*": 0.0, f"sample/{name}": floor})
        resources = {**graph_run["resources"], "quality": gates}
        outcomes[label] = _reevaluate(graph_run, resources, [name, "clip_zero_shot"])

    passing = outcomes["at"]
    assert passing.success
    evaluations = _evaluations(passing)
    assert evaluations[(f"evaluation_{name}", "accuracy_above_floor")].passed is True
    skipped = evaluations[("evaluation_clip_zero_shot", "accuracy_above_floor")]
    assert (skipped.passed, skipped.severity) == (False, WARN)
    assert "leaderboard" in _materialized(passing) and _blocked(passing) == []

    failing = outcomes["above"]
    assert not failing.success
    check = _evaluations(failing)[(f"evaluation_{name}", "accuracy_above_floor")]
    assert (check.passed, check.severity) == (False, ERROR)
    assert check.description == f"top-1 {acc:.3f} vs floor {acc + 0.01:.3f} (sample)"
    assert failing.get_failed_step_keys() == {f"evaluation_{name}"}
    # Dagster stores the value before the check fails the step (ADR 0007, "Limits").
    assert f"evaluation_{name}" in _materialized(failing)
    assert "leaderboard" not in _materialized(failing)
    assert _blocked(failing) == ["leaderboard"]


def test_the_shipped_floor_reaches_the_check_in_a_run(graph_run, mlflow_isolated):
    """With the default `QualityGates` (no override), the run's accuracy check uses the shipped
    sample floor of `custom_cnn` (0.50) and its verdict and the run's outcome follow the
    measured accuracy. Catches the asset not passing the entry's `accuracy_floors` to the check."""
    name = "custom_cnn"
    resources = {**graph_run["resources"], "quality": QualityGates()}
    defs = build_definitions(resources)
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=[f"evaluation_{name}"],
        resources=resources,
        instance=graph_run["instance"],
        raise_on_error=False,
        run_config={"ops": {f"evaluation_{name}": {"config": {"n_bootstrap": 200}}}},
    )
    acc = result.output_for_node(f"evaluation_{name}").summary["test/acc_top1"]
    check = _evaluations(result)[(f"evaluation_{name}", "accuracy_above_floor")]
    assert check.metadata["floor"].value == 0.50
    assert check.passed is (acc >= 0.50)
    assert result.success is (acc >= 0.50)


def test_an_onnx_parity_mismatch_fails_the_run_and_blocks_the_comparison(graph_run, monkeypatch):
    """An exporter that writes a different network than the bundle (one weight tensor shifted;
    its metadata and graph hash are consistent, so only parity can tell): `onnx_parity` fails
    at ERROR, the run fails (README: "A failing check ... ONNX parity ... fails that run") and
    `leaderboard` is not materialized. Catches a parity check that always passes or
    reports at WARN, and one that is not `blocking=True`."""
    from food_assets.ml.export import onnx_export

    name = "custom_cnn"
    real = onnx_export.export_onnx

    def drifted_export(net, card, path, **kwargs):
        other = copy.deepcopy(net)
        with torch.no_grad():
            weight = max(other.parameters(), key=lambda p: p.numel())
            weight.view(-1)[: weight.numel() // 2] += 0.5
        return real(other, card, path, **kwargs)

    monkeypatch.setattr(onnx_export, "export_onnx", drifted_export)
    with rematerialized_export(graph_run, name) as result:
        pass
    check = _evaluations(result)[(f"onnx_{name}", "onnx_parity")]
    assert (check.passed, check.severity) == (False, ERROR)
    assert check.description.startswith("max |diff| ")
    assert check.metadata["max_abs_diff"].value > check.metadata["atol"].value
    assert not result.success
    assert result.get_failed_step_keys() == {f"onnx_{name}_onnx_parity"}
    assert f"onnx_{name}" in _materialized(result)  # the export ran; its check failed
    assert "leaderboard" not in _materialized(result)
    assert _blocked(result) == ["leaderboard"]
