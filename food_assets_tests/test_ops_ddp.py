"""Distributed training through Lightning, and the team configs that select it.

`ddp_spawn` on two CPU processes (gloo) stands in for a multi-GPU node: the same code path
(`DDPStrategy`, DistributedSampler, metric sync, rank-0-only writes) without a GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.evaluation import predict_logits
from food_assets.ml.models import get_model_spec, list_models
from food_assets.ml.models.bundle import load_bundle
from food_assets.ml.training import ComputeConfig, TrainConfig, train_model
from food_assets_tests.test_ml_training import make_tiny_splits

TEAM = Path(__file__).resolve().parents[1] / "configs" / "team"

pytestmark = [
    # Lightning 2.6's own _pytree helper calls a torch 2.14 API that warns; not our code.
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
]


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> SplitManifest:
    return make_tiny_splits(tmp_path_factory.mktemp("ddp_tiny"))


def _cfg(batch_size: int = 5) -> TrainConfig:
    # 18 train images: 9 per rank under DDP; batch 5 leaves no trailing batch of one. (Batch 4
    # would leave one image per rank; SplitDataModule drops such a batch per rank, see
    # test_ops_fixed_issues.py.)
    return TrainConfig(
        mode="scratch", epochs=1, batch_size=batch_size, lr=3e-3, image_size=32, num_workers=0,
        warmup_epochs=0, weight_decay=0.0, early_stopping_patience=None,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ddp_spawn_bundle_evaluates_like_a_single_process_one(
    splits: SplitManifest, tmp_path: Path
) -> None:
    cfg = _cfg()
    single = train_model(
        "custom_cnn", splits, cfg, ComputeConfig(accelerator="cpu", devices=1), tmp_path / "one",
        progress_bar=False,
    )  # fmt: skip
    ddp = train_model(
        "custom_cnn",
        splits,
        cfg,
        ComputeConfig(accelerator="cpu", devices=2, strategy="ddp_spawn"),
        tmp_path / "ddp",
        progress_bar=False,
    )
    assert ddp.metadata["devices"] == 2 and ddp.metadata["strategy"] == "DDPStrategy"
    assert single.metadata["devices"] == 1
    # Both ranks trained: the epoch saw every train image once, split across the two ranks.
    n_train = int((splits.frame()["split"] == "train").sum())
    assert ddp.history.iloc[0]["train_images"] >= n_train
    assert ddp.metadata["epochs_run"] == single.metadata["epochs_run"] == 1

    (m1, c1), (m2, c2) = load_bundle(single.bundle_dir), load_bundle(ddp.bundle_dir)
    # The same contract: card (bar the metrics), state-dict layout, eval mode.
    d1, d2 = c1.to_dict(), c2.to_dict()
    for d in (d1, d2):
        d.pop("metrics")
        for key in ("val_acc_raw", "val_acc_ema"):  # the recipe record's copies of the metrics
            d.get("recipe", {}).pop(key, None)
    assert d1 == d2
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert {k: (v.shape, v.dtype) for k, v in s1.items()} == {
        k: (v.shape, v.dtype) for k, v in s2.items()
    }
    assert not m2.training
    # The DDP weights are trained weights, not the shared seeded init.
    assert any(not torch.equal(s1[k], s2[k]) for k in s1 if s1[k].is_floating_point())

    # And they evaluate the same way: same rows, same labels, finite logits of the same shape.
    val = splits.frame("val")
    p1 = predict_logits(m1, val, c1.preprocess, batch_size=8)
    p2 = predict_logits(m2, val, c2.preprocess, batch_size=8)
    assert p1.logits.shape == p2.logits.shape == (len(val), len(splits.class_names))
    assert p1.paths == p2.paths and np.array_equal(p1.labels, p2.labels)
    assert np.isfinite(p2.logits).all()
    # The val accuracy recorded at training time is what the bundle gives back (rank 0 saved
    # the synchronised weights, not a half-updated replica).
    acc = float((p2.logits.argmax(1) == p2.labels).mean())
    assert acc == pytest.approx(ddp.metadata["best_val_acc"], abs=1e-6)


def test_team_gpu_run_config_validates_against_the_real_job() -> None:
    """configs/team/run_config_gpu.yaml is accepted by `train_all` as it ships, and the
    compute resource it configures maps onto a valid DDP ComputeConfig."""
    import dagster as dg

    from food_assets.definitions import build_definitions
    from food_assets.defs.resources import LightningCompute

    run_config = yaml.safe_load((TEAM / "run_config_gpu.yaml").read_text())
    job = build_definitions().resolve_job_def("train_all")
    dg.validate_run_config(job, run_config)
    compute = LightningCompute(**run_config["resources"]["compute"]["config"]).compute_config()
    assert compute.devices == 4 and compute.strategy.startswith("ddp")


def test_k8s_executor_config_sends_every_training_step_to_a_gpu_node() -> None:
    """Every model asset that trains or fits, and every op `configs/food101.yaml` runs with
    `device: cuda`, is a GPU step (the `gpu` pool, whose op tags place it on a GPU node:
    food_assets/defs/placement.py, test_placement.py), and the executor's run config keeps no
    per-step placement that could disagree with them (one place, ADR 0023).

    Breakage caught: a trained model added outside the `gpu` pool; an evaluation moved to CUDA
    in the recipe but left on a CPU pod; a `per_step_k8s_config` added back to the run config.
    """
    from food_assets.definitions import build_definitions
    from food_assets.defs.placement import GPU_OP_TAGS, GPU_POOL

    cfg = yaml.safe_load((TEAM / "k8s_executor.yaml").read_text())["execution"]["config"]
    assert "per_step_k8s_config" not in cfg
    trained = {
        f"model_{n}"
        for n in list_models()
        if get_model_spec(n).family in ("scratch", "transfer", "probe")
    }
    recipe = yaml.safe_load((TEAM.parent / "food101.yaml").read_text())["ops"]
    on_cuda = {op for op, c in recipe.items() if c.get("config", {}).get("device") == "cuda"}
    gpu_steps = {
        key.to_user_string()
        for a in build_definitions().resolve_asset_graph().assets_defs
        if a.op.pool == GPU_POOL and all(a.op.tags.get(k) == v for k, v in GPU_OP_TAGS.items())
        for key in a.keys
    }
    assert trained <= gpu_steps and on_cuda <= gpu_steps, (trained | on_cuda) - gpu_steps
    # The default executor stays the laptop's: the k8s executor lives in its own code location.
    assert (
        "k8s_job_executor"
        not in (Path(__file__).resolve().parents[1] / "food_assets" / "definitions.py").read_text()
    )


@pytest.mark.parametrize("name", ["food101_ddp.yaml", "team/run_config_gpu.yaml"])
def test_multi_gpu_configs_select_ddp_with_the_gpu_recipe(name: str) -> None:
    """The shipped multi-GPU configs map onto a DDP ComputeConfig with the GPU recipe's
    defaults (auto precision, GPU decode, channels_last). Breakage caught: a config pinned to
    fp16 or to CPU decode, or one that no longer parses into a ComputeConfig."""
    config = yaml.safe_load((TEAM.parent / name).read_text())["resources"]["compute"]["config"]
    compute = ComputeConfig(**config)
    assert compute.strategy.startswith("ddp") and isinstance(compute.devices, int)
    assert compute.devices > 1
    assert compute.precision == "auto" and compute.gpu_decode == "auto"
    assert compute.channels_last == "auto" and compute.compile is False
