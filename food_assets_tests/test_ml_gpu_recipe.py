"""The GPU recipe switches of `ComputeConfig`, checked on the objects Lightning receives.

No GPU here: each switch is asserted where it lands (DataLoader, Trainer, model, torch flags),
with the CUDA-only resolutions (`auto` on CUDA) checked through `resolve_loader(cuda=True)` and
the clear errors a CPU-only machine gives for a switch that needs CUDA.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import ConfigError
from food_assets.ml.training import ComputeConfig, TrainConfig, train_model
from food_assets.ml.training.checkpoints import get_config_hash
from food_assets.ml.training.compute import CPU_NHWC_FLAGS, channels_last_for, resolve_loader
from food_assets.ml.training.datamodule import SplitDataModule
from food_assets.ml.training.precision import cpu_flags
from food_assets.ml.training.trainer import build_trainer
from food_assets_tests.test_ml_training import make_tiny_splits

pytestmark = [
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
]


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> SplitManifest:
    return make_tiny_splits(tmp_path_factory.mktemp("recipe_tiny"))


def _cfg(**kw) -> TrainConfig:
    base = dict(
        mode="scratch", epochs=1, batch_size=6, image_size=32, warmup_epochs=0,
        early_stopping_patience=None, precise_bn_batches=0,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_loader_options_reach_the_dataloader(splits: SplitManifest) -> None:
    """Breakage caught: a loader switch resolved but not passed to `DataLoader`."""
    compute = ComputeConfig(
        accelerator="cpu", loader_workers="2", pin_memory="on", prefetch_factor=3,
        persistent_workers=False,
    )  # fmt: skip
    loader = resolve_loader(compute, _cfg(), cuda=False)
    dm = SplitDataModule(splits, Preprocess(input_size=32), batch_size=4, loader=loader)
    dm.setup("fit")
    for dl in (dm.train_dataloader(), dm.val_dataloader()):
        assert dl.num_workers == 2 and dl.pin_memory is True
        assert dl.prefetch_factor == 3 and dl.persistent_workers is False


@pytest.mark.parametrize(
    ("compute", "num_workers", "cuda", "expected"),
    [
        # The CPU path as it always was: TrainConfig.num_workers, 0 by default.
        (ComputeConfig(), 0, False, dict(num_workers=0, pin_memory=False, gpu_decode=False)),
        (ComputeConfig(), 3, False, dict(num_workers=3, pin_memory=False, gpu_decode=False)),
        # CUDA: bytes-reading workers for nvjpeg, capped at 8; pinned memory.
        (ComputeConfig(), 0, True, dict(num_workers=8, pin_memory=True, gpu_decode=True)),
        # CUDA with CPU decode: every core but one.
        (ComputeConfig(gpu_decode="off"), 0, True, dict(num_workers=15, gpu_decode=False)),
        # A model's explicit num_workers still wins under auto; loader_workers wins over both.
        (ComputeConfig(), 4, True, dict(num_workers=4)),
        (ComputeConfig(loader_workers="6"), 4, True, dict(num_workers=6)),
        (ComputeConfig(pin_memory="off"), 0, True, dict(pin_memory=False)),
    ],
)
def test_loader_auto_resolution(compute, num_workers, cuda, expected) -> None:
    """Breakage caught: `auto` ignoring CUDA, TrainConfig.num_workers no longer honoured
    (backwards compatibility), the worker cap lost, pin_memory on without CUDA."""
    got = resolve_loader(compute, _cfg(num_workers=num_workers), cuda=cuda, cores=16)
    assert {k: getattr(got, k) for k in expected} == expected


def test_ddp_ranks_share_the_cores() -> None:
    """Breakage caught: 4 ranks each starting 8 workers on a 16-core node."""
    got = resolve_loader(ComputeConfig(), _cfg(), cuda=True, local_devices=4, cores=16)
    assert got.num_workers == 4


def test_trainer_receives_accumulation_and_cudnn_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Breakage caught: accumulate_grad_batches or cudnn_benchmark not reaching the Trainer."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    compute = ComputeConfig(accelerator="cpu", accumulate_grad_batches=3, cudnn_benchmark="on")
    trainer, _ = build_trainer(_cfg(), compute, tmp_path, progress_bar=False)
    assert trainer.accumulate_grad_batches == 3
    assert torch.backends.cudnn.benchmark is True
    # auto on the CPU leaves the process flag alone (Lightning's default).
    build_trainer(_cfg(), ComputeConfig(accelerator="cpu"), tmp_path, progress_bar=False)
    assert torch.backends.cudnn.benchmark is True


def test_global_batch_size_derives_accumulation(tmp_path: Path) -> None:
    """Breakage caught: the global batch ignored, or derived without the world size."""
    compute = ComputeConfig(accelerator="cpu", devices=1, global_batch_size=24)
    trainer, _ = build_trainer(_cfg(batch_size=6), compute, tmp_path, progress_bar=False)
    assert trainer.accumulate_grad_batches == 4
    with pytest.raises(ConfigError, match=r"not a multiple of batch_size 7 x 1 .* use 21"):
        build_trainer(_cfg(batch_size=7), compute, tmp_path, progress_bar=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(accelerator="cpu", gpu_decode="on"), "gpu_decode: on .* accelerator is cpu"),
        (dict(compile_mode="max-autotune"), "only applies with compile: true"),
        (dict(compile=True, compile_mode="fastest"), "compile_mode 'fastest' is not one of"),
        (dict(cudnn_benchmark="on", deterministic=True), "deterministic: true rules out"),
        (dict(global_batch_size=256, accumulate_grad_batches=2), "not both"),
        (dict(loader_workers="many"), "loader_workers must be 'auto' or a count"),
        (dict(prefetch_factor=0), "prefetch_factor must be >= 1"),
        (dict(pin_memory="yes"), "pin_memory must be auto, on or off"),
    ],
)
def test_invalid_switches_name_the_fix(kwargs, match) -> None:
    """Breakage caught: a contradictory or misspelt switch accepted silently."""
    with pytest.raises(ConfigError, match=match):
        ComputeConfig(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_gpu_decode_on_without_cuda_fails_before_writing(
    splits: SplitManifest, tmp_path: Path
) -> None:
    """`gpu_decode: on` with `accelerator: auto` on a CPU-only machine: a clear error, no run
    folder. Breakage caught: falling back silently to CPU decode, or failing mid-run."""
    with pytest.raises(ConfigError, match=r"gpu_decode: on needs a CUDA GPU.*auto.*or off"):
        train_model("custom_cnn", splits, _cfg(), ComputeConfig(gpu_decode="on"), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_speed_switches_do_not_break_resume_but_accumulation_does(splits: SplitManifest) -> None:
    """Breakage caught: a loader or compile change starting a run over (hash too wide), or a
    different accumulation resuming another run's checkpoints (hash too narrow)."""
    cfg = _cfg()

    def hash_of(**kw) -> str:
        return get_config_hash("custom_cnn", splits, cfg, ComputeConfig(**kw))[0]

    base = hash_of()
    assert hash_of(loader_workers="4", gpu_decode="off", compile=True, channels_last="on") == base
    assert hash_of(accumulate_grad_batches=2) != base
    assert hash_of(global_batch_size=64) != base


class _Seen(pl.Callback):
    """Records the model's memory format and what the module was given, mid-training."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        conv = next(m for m in pl_module.model.modules() if isinstance(m, torch.nn.Conv2d))
        self.rows.append(
            {
                "weights_nhwc": conv.weight.is_contiguous(memory_format=torch.channels_last),
                "use_channels_last": pl_module.use_channels_last,
                "compiled": getattr(pl_module.model, "_compiled_call_impl", None) is not None,
            }
        )


def test_channels_last_auto_is_on_with_cuda_and_on_avx512_cpus_only() -> None:
    """Breakage caught: `auto` turning NHWC on for a CPU where it was never measured (or off on
    the AVX-512 CPUs where every registry CNN trained 1.23-1.31x faster in it), or overriding an
    explicit `on`/`off`."""
    avx512, avx2 = {"avx2", "avx512_f", "avx512_bw"}, {"avx2", "fma3"}
    assert channels_last_for("auto", cuda=False, flags=avx512) is True
    assert channels_last_for("auto", cuda=False, flags=avx2) is False
    assert channels_last_for("auto", cuda=True, flags=avx2) is True
    assert channels_last_for("off", cuda=True, flags=avx512) is False
    assert channels_last_for("on", cuda=False, flags=()) is True


@pytest.mark.parametrize("setting", ["on", "off", "auto"])
def test_channels_last_reaches_the_model(splits: SplitManifest, tmp_path: Path, setting) -> None:
    """Breakage caught: `channels_last: on` (or `auto` on an AVX-512 CPU such as this one) not
    converting the weights, `off` converting them, the module's forward not told to convert its
    batches."""
    seen = _Seen()
    result = train_model(
        "custom_cnn", splits, _cfg(), ComputeConfig(accelerator="cpu", channels_last=setting),
        tmp_path, callbacks=[seen], progress_bar=False,
    )  # fmt: skip
    on = channels_last_for(setting, cuda=False)
    if setting == "auto":
        assert on is bool(CPU_NHWC_FLAGS & cpu_flags())
    assert seen.rows and all(
        r["weights_nhwc"] is on and r["use_channels_last"] is on for r in seen.rows
    )
    assert result.metadata["channels_last"] is on
    # The loader as resolved on the CPU: decode in the training process, as before.
    assert result.metadata["gpu_decode"] is False and result.metadata["loader_workers"] == 0
    assert not any(r["compiled"] for r in seen.rows)


@pytest.mark.slow
def test_compile_wraps_the_model_and_keeps_the_bundle_loadable(
    splits: SplitManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`compile: true` compiles the model in place with the configured mode.

    Dynamo really captures the graphs; the backend is swapped for `aot_eager` (the real
    autograd split, no Inductor C++ build, which takes minutes on 2 shared cores).
    Breakage caught: the switch ignored, the mode not passed on, or compile wrapping the model
    in an OptimizedModule whose `_orig_mod.` keys would break checkpoints and the bundle.
    """
    import torch._dynamo

    from food_assets.ml.models.bundle import load_bundle

    real_compile, modes = torch.compile, []

    def compile_aot_eager(fn, *, mode=None, **kw):
        modes.append(mode)
        return real_compile(fn, backend="aot_eager", **kw)

    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    torch._dynamo.reset()
    seen = _Seen()
    compute = ComputeConfig(accelerator="cpu", compile=True, compile_mode="reduce-overhead")
    result = train_model(
        "custom_cnn", splits, _cfg(limit_train_batches=2, limit_val_batches=1), compute,
        tmp_path, callbacks=[seen], progress_bar=False,
    )  # fmt: skip
    assert modes == ["reduce-overhead"]
    assert seen.rows and all(r["compiled"] for r in seen.rows)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert result.metadata["compile"] is True
    model, _ = load_bundle(result.bundle_dir)  # strict load: no _orig_mod. prefixes
    assert not any("_orig_mod" in k for k in model.state_dict())
