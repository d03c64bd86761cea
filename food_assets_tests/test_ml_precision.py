"""`precision: auto` (ml/training/precision.py): the resolver, a real bf16-mixed fit on the CPU,
and bf16 evaluation against fp32 on the same trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from food_assets.ml.errors import ConfigError
from food_assets.ml.evaluation.predict import predict_logits
from food_assets.ml.models.bundle import load_bundle
from food_assets.ml.training import ComputeConfig, TrainConfig, train_model
from food_assets.ml.training.precision import (
    cpu_has_bf16,
    eval_autocast,
    resolve_eval_precision,
    resolve_training_precision,
)
from food_assets_tests.test_ml_training import make_tiny_splits, scratch_cfg

ZEN4 = {"avx2", "avx512_f", "avx512_vnni", "avx512_bf16"}  # this machine's kind of CPU
SAPPHIRE_RAPIDS = {"avx512_f", "amx_tile", "amx_bf16", "amx_int8"}
SKYLAKE = {"avx2", "avx512_f", "avx512_vnni"}  # AVX-512 but no bf16: emulated, slower


@pytest.mark.parametrize(
    ("flags", "training", "evaluation"),
    [
        (ZEN4, "bf16-mixed", "bf16"),
        (SAPPHIRE_RAPIDS, "bf16-mixed", "bf16"),
        (SKYLAKE, "32-true", "fp32"),
        (set(), "32-true", "fp32"),
    ],
)
def test_auto_on_cpu_follows_the_bf16_flags(
    flags: set[str], training: str, evaluation: str
) -> None:
    """Breakage caught: auto picking bf16 on a CPU without native bf16 (AVX-512 alone is not
    enough), or missing AMX-BF16 as a bf16 CPU."""
    assert resolve_training_precision("auto", device_type="cpu", flags=flags) == training
    assert resolve_eval_precision("auto", "cpu", flags=flags) == evaluation


def test_auto_on_cuda_and_explicit_values() -> None:
    """Breakage caught: auto on a pre-Ampere GPU choosing bf16 (it has none) instead of
    16-mixed; an explicit precision being overridden; MPS getting bf16."""
    assert resolve_training_precision("auto", device_type="cuda", cuda_bf16=True) == "bf16-mixed"
    assert resolve_training_precision("auto", device_type="cuda", cuda_bf16=False) == "16-mixed"
    assert resolve_training_precision("auto", device_type="mps", flags=ZEN4) == "32-true"
    assert resolve_training_precision("32-true", device_type="cpu", flags=ZEN4) == "32-true"
    assert resolve_eval_precision("fp32", "cpu", flags=ZEN4) == "fp32"
    with pytest.raises(ConfigError, match="auto"):
        resolve_eval_precision("fp16", "cpu")


def test_compute_config_resolves_auto_for_the_trainer() -> None:
    """Breakage caught: `auto` reaching Lightning unresolved (it rejects it) or the resolved
    value not matching this machine's CPU."""
    kwargs = ComputeConfig(accelerator="cpu", devices=1).to_trainer_kwargs()
    assert kwargs["precision"] == ("bf16-mixed" if cpu_has_bf16() else "32-true")
    explicit = ComputeConfig(accelerator="cpu", precision="32-true").to_trainer_kwargs()
    assert explicit["precision"] == "32-true"


def test_auto_keeps_fp32_on_cpu_for_architectures_bf16_does_not_speed_up() -> None:
    """`precision: auto` picks bf16 on a bf16 CPU only for architectures where it pays
    (`ModelSpec.cpu_bf16`): ResNet-50 trains 1.31x faster under bf16 here, EfficientNet-B0
    0.86x (docs/benchmarks.md, `benchmarks/training_throughput.py --bf16`). A GPU and an
    explicit precision are not affected.

    Breakage caught: `cpu_bf16_pays` ignored by the resolver; a depthwise net's registry entry
    losing `cpu_bf16=False`; ResNet-50 losing bf16; build_trainer not passing the entry's
    choice to the Trainer.
    """
    from food_assets.ml.models import get_model_spec
    from food_assets.ml.training.trainer import build_trainer

    assert resolve_training_precision(
        "auto", device_type="cpu", flags=ZEN4, cpu_bf16_pays=False
    ) == ("32-true")
    assert resolve_training_precision(
        "auto", device_type="cuda", cuda_bf16=True, cpu_bf16_pays=False
    ) == ("bf16-mixed")
    assert resolve_training_precision("bf16-mixed", device_type="cpu", cpu_bf16_pays=False) == (
        "bf16-mixed"
    )
    pays = {n: get_model_spec(n).cpu_bf16 for n in ("resnet50", "efficientnet_b0", "custom_cnn")}
    assert pays == {"resnet50": True, "efficientnet_b0": False, "custom_cnn": False}
    assert not get_model_spec("efficientnet_lite0").cpu_bf16
    compute = ComputeConfig(accelerator="cpu", devices=1)
    cfg = TrainConfig(mode="scratch", weights="none", epochs=1)
    for cpu_bf16 in (True, False):
        trainer, _ = build_trainer(cfg, compute, Path("/nonexistent"), cpu_bf16=cpu_bf16)
        expected = "bf16-mixed" if (cpu_bf16 and cpu_has_bf16()) else "32-true"
        assert trainer.precision == expected


bf16_cpu = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16")


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory: pytest.TempPathFactory):
    splits = make_tiny_splits(tmp_path_factory.mktemp("tiny_bf16"))
    out = tmp_path_factory.mktemp("bf16_run")
    compute = ComputeConfig(accelerator="cpu", devices=1, precision="bf16-mixed")
    result = train_model(
        "custom_cnn", splits, scratch_cfg(epochs=4), compute, out, progress_bar=False
    )
    return splits, result


@pytest.mark.slow
def test_bf16_mixed_fit_on_cpu_writes_a_working_fp32_bundle(bf16_run) -> None:
    """A real Lightning fit under bf16-mixed autocast on the CPU: the bundle holds fp32 weights,
    reloads, and classifies the tiny set far above chance.

    Breakage caught: bf16-mixed refused on the CPU, the resolved precision missing from the
    metadata, bf16 weights written into the bundle, or a fit that learns nothing.
    """
    splits, result = bf16_run
    assert result.metadata["precision"] == "bf16-mixed"
    assert result.metadata["precision_requested"] == "bf16-mixed"
    net, card = load_bundle(result.bundle_dir)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    preds = predict_logits(net, splits.frame("val"), card.preprocess, precision="fp32")
    acc = float((preds.logits.argmax(1) == preds.labels).mean())
    assert acc >= 0.7, acc  # 3 classes: chance is 0.33


@pytest.mark.slow
@bf16_cpu
def test_bf16_evaluation_agrees_with_fp32(bf16_run) -> None:
    """Breakage caught: the precision argument ignored (logits bit-identical to fp32 means no
    autocast ran), bf16 logits leaking out as bf16, or bf16 changing the top-1 predictions."""
    splits, result = bf16_run
    net, card = load_bundle(result.bundle_dir)
    frame = splits.frame()
    fp32 = predict_logits(net, frame, card.preprocess, precision="fp32")
    bf16 = predict_logits(net, frame, card.preprocess, precision="bf16")
    auto = predict_logits(net, frame, card.preprocess, precision="auto")
    assert bf16.logits.dtype == np.float32
    assert not np.array_equal(fp32.logits, bf16.logits)  # autocast really ran
    np.testing.assert_array_equal(auto.logits, bf16.logits)  # auto is bf16 on this CPU
    np.testing.assert_allclose(bf16.logits, fp32.logits, atol=0.15, rtol=0.05)
    assert (bf16.logits.argmax(1) == fp32.logits.argmax(1)).mean() >= 0.95


def test_eval_autocast_runs_matmuls_in_bf16() -> None:
    """Breakage caught: `eval_autocast("bf16")` not entering autocast, or `fp32` entering it."""
    x = torch.randn(4, 8)
    w = torch.randn(8, 3)
    with eval_autocast("bf16", "cpu"):
        assert (x @ w).dtype == torch.bfloat16
    with eval_autocast("fp32", "cpu"):
        assert (x @ w).dtype == torch.float32


def test_predict_logits_refuses_an_unknown_precision(tmp_path: Path) -> None:
    """Breakage caught: a typo such as `bf61` silently evaluating in fp32."""
    splits = make_tiny_splits(tmp_path / "s", per_class=2, val_every=2)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))
    from food_assets.ml.data.transforms import Preprocess

    with pytest.raises(ConfigError, match="fp32"):
        predict_logits(net, splits.frame(), Preprocess(input_size=16), precision="bf61")
