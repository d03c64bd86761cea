"""End to end: with a local CLIP checkpoint configured, both CLIP assets run fully and plug into
evaluation, Grad-CAM (through the ViT reshape) and ONNX export like every other model."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
import torch

from food_assets.definitions import build_definitions, default_resources
from food_assets.defs.assets._common import Skipped
from food_assets.ml.models import get_model_spec
from food_assets_tests.reference import reference_pointing_game
from food_assets_tests.test_ml_clip import TINY_ARCH, TINY_CFG

pytestmark = pytest.mark.slow

CLIP = ("clip_zero_shot", "clip_linear_probe")


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    from safetensors.torch import save_file

    from food_assets.ml.models import clip as clip_mod

    clip_mod.register_arch(TINY_ARCH, TINY_CFG)
    torch.manual_seed(0)
    model = clip_mod._create_open_clip(TINY_ARCH, checkpoint=None, quick_gelu=False)
    ckpt = tmp_path_factory.mktemp("weights") / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))

    data_dir = tmp_path_factory.mktemp("clip") / "data"
    resources = default_resources(str(data_dir))
    defs = build_definitions(resources)
    clip_config = {
        "arch": TINY_ARCH,
        "weights": str(ckpt),  # a local checkpoint: the documented offline route
        "model_cfg": TINY_CFG,  # a ClipConfig field, settable as it is
        "on_missing_weights": "error",
        "device": "cpu",
        "batch_size": 16,
    }
    ops = {
        "food_images_raw": {
            "config": {
                "sample_num_classes": 4,
                "sample_images_per_class": 16,
                "sample_image_size": 64,
            }
        },
        **{f"model_{n}": {"config": clip_config} for n in CLIP},
        # The probe's own field (ClipProbeConfig): a zero-shot run config has no `k_shots`.
        "model_clip_linear_probe": {"config": {**clip_config, "k_shots": [1, 2, 4]}},
        **{f"evaluation_{n}": {"config": {"n_bootstrap": 100}} for n in CLIP},
        **{
            f"onnx_{n}": {"config": {"latency_repeats": 2, "latency_repeats_batch32": 1}}
            for n in CLIP
        },
    }
    selection = dg.AssetSelection.assets(
        "food_images_raw",
        "food_splits",
        *[f"{p}_{n}" for n in CLIP for p in ("model", "evaluation", "gradcam", "onnx")],
    )
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=selection,
        resources=resources,
        run_config={"ops": ops},
        raise_on_error=False,
    )
    return result


def test_clip_assets_run_fully_with_a_local_checkpoint(clip_run):
    failures = [e.step_key for e in clip_run.all_events if e.is_step_failure]
    assert clip_run.success, failures
    for name in CLIP:
        for prefix in ("model", "evaluation", "gradcam", "onnx"):
            assert not isinstance(clip_run.output_for_node(f"{prefix}_{name}"), Skipped)


def test_zero_shot_metadata_shows_each_template_and_the_ensemble(clip_run):
    meta = clip_run.asset_materializations_for_node("model_clip_zero_shot")[0].metadata
    keys = set(meta)
    assert "mlflow_run_id" in keys and "weights_source" in keys
    table = meta["template_table"].value  # one row per template plus the ensemble
    assert "a photo of {c}, a type of food." in table and "ensemble" in table
    # The gain is the difference of the accuracies it is derived from: the metadata's own, and
    # the saved table's ensemble row and best single-template row (once only the key was
    # checked). Breakage tried: gain = ensemble - worst single template; it passes here, as
    # all four templates score alike in this tiny run (test_ml_clip's fit test, on a
    # checkpoint whose templates disagree, catches it).
    gain = meta["val/ensemble_gain_over_best_single"].value
    ensemble, best = meta["val/acc_top1"].value, meta["val/acc_top1_best_single_template"].value
    assert gain == pytest.approx(ensemble - best, abs=1e-12)
    bundle_dir = clip_run.output_for_node("model_clip_zero_shot").bundle_dir
    saved = pd.read_parquet(bundle_dir.parent / "template_accuracy.parquet")
    val = saved[saved["split"] == "val"]
    assert ensemble == pytest.approx(val["acc_top1"].iloc[-1], abs=1e-12)
    assert best == pytest.approx(val["acc_top1"].iloc[:-1].max(), abs=1e-12)
    probe = clip_run.asset_materializations_for_node("model_clip_linear_probe")[0].metadata
    assert "kshot_table" in probe and "best_C" in probe


def test_clip_exports_keep_parity_and_gradcam_uses_the_vit(clip_run):
    checks = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in clip_run.get_asset_check_evaluations()
    }
    for name in CLIP:
        assert checks[(f"onnx_{name}", "onnx_parity")] is True
        meta = clip_run.asset_materializations_for_node(f"onnx_{name}")[0].metadata
        assert meta["max_abs_logit_diff"].value <= 1e-4
        gmeta = clip_run.asset_materializations_for_node(f"gradcam_{name}")[0].metadata
        assert "resblocks" in gmeta["cam_layer"].value
        # Recomputed outside the report, through the ViT reshape, on every test image (once only
        # its range was checked). Breakage tried: the report's boxes left unmapped (fails).
        test_frame = clip_run.output_for_node("food_splits").frame("test")
        assert len(test_frame) <= 64  # the report's n_sanity: all of them are used
        spec = get_model_spec(name)
        expected, n_boxes = reference_pointing_game(
            clip_run.output_for_node(f"model_{name}").bundle_dir,
            test_frame,
            spec.cam_layer,
            spec.cam_reshape,
        )
        assert gmeta["pointing_n"].value == n_boxes == len(test_frame)
        assert gmeta["pointing_game"].value == pytest.approx(expected, abs=1e-12), name
