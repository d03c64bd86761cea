"""Registry CNNs, the weights policy and the profiler: real models at small sizes, no network."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from food_assets.ml.data.transforms import ImagePipeline, Preprocess
from food_assets.ml.errors import CheckpointError, UnknownModelError, WeightsNotFoundError
from food_assets.ml.models import create_model, get_model_spec, list_models
from food_assets.ml.models.custom_cnn import FoodNet
from food_assets.ml.models.profile import count_params_and_gmacs
from food_assets.ml.models.weights import (
    CACHE_DIR_ENV,
    LITE0_PACKAGE_SOURCE,
    WEIGHTS_DIR_ENV,
    convert_lite0_package_weights,
    get_weights_source,
)

ZOO = ("custom_cnn", "resnet50", "efficientnet_b0", "efficientnet_lite0")
ESPRESSO = 967  # ImageNet-1k class index


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights_cache")


@pytest.fixture(autouse=True)
def _isolated_weights(weights_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Converted weights go to a per-module cache, and no developer's ./data/weights or
    # $FOOD_ASSETS_WEIGHTS_DIR can change what a test sees.
    monkeypatch.setenv(CACHE_DIR_ENV, str(weights_cache))
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path / "no_weights_here"))
    monkeypatch.chdir(tmp_path)


def test_zoo_models_are_registered() -> None:
    assert set(ZOO) <= set(list_models())
    assert "custom_cnn" in list_models("scratch")
    assert {"resnet50", "efficientnet_b0", "efficientnet_lite0"} <= set(list_models("transfer"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_builds_and_returns_logits(name: str) -> None:
    spec = get_model_spec(name)
    model = create_model(name, num_classes=5, weights="none").eval()
    assert get_weights_source(model) == "none (random init)"
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 48, 48))
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    # The Grad-CAM layer is a real submodule that produces a spatial map.
    layer = model.get_submodule(spec.cam_layer)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(torch.randn(1, 3, 48, 48))
    handle.remove()
    assert seen and seen[0].ndim == 4
    pre = spec.preprocess()
    assert isinstance(pre, Preprocess) and pre.input_size == 224


@pytest.mark.parametrize(
    ("name", "timm_name"),
    [
        ("resnet50", "resnet50"),
        ("efficientnet_b0", "efficientnet_b0"),
        ("efficientnet_lite0", "tf_efficientnet_lite0"),
    ],
)
def test_timm_preprocess_comes_from_timm_config(name: str, timm_name: str) -> None:
    import timm

    data = timm.data.resolve_data_config(model=timm.create_model(timm_name, pretrained=False))
    pre = get_model_spec(name).preprocess()
    assert pre.input_size == data["input_size"][-1]
    assert pre.mean == pytest.approx(data["mean"]) and pre.std == pytest.approx(data["std"])
    assert pre.interpolation == data["interpolation"]
    assert pre.crop_pct == pytest.approx(data["crop_pct"])


def test_custom_cnn_size_and_cost_match_its_docstring() -> None:
    params, gmacs = count_params_and_gmacs(FoodNet(101), 224)
    assert params <= 10_000_000
    # The module docstring documents 4.15 M params and 0.950 GMACs at 224 px.
    assert params / 1e6 == pytest.approx(4.15, abs=0.01)
    assert gmacs == pytest.approx(0.950, abs=0.005)
    import food_assets.ml.models.custom_cnn as mod

    assert "4.15 M" in (mod.__doc__ or "") and "0.950" in (mod.__doc__ or "")


@pytest.mark.slow
def test_profile_counts_resnet50_like_published_figures() -> None:
    model = create_model("resnet50", num_classes=1000, weights="none")
    params, gmacs = count_params_and_gmacs(model, 224)
    assert params == 25_557_032  # torchvision/timm's published figure
    assert gmacs == pytest.approx(4.09, abs=0.05)
    assert model.training  # mode restored


def test_lite0_imagenet_weights_are_real(weights_cache: Path) -> None:
    from skimage.data import coffee

    model = create_model("efficientnet_lite0", num_classes=1000, weights="imagenet").eval()
    assert get_weights_source(model) == LITE0_PACKAGE_SOURCE
    pipeline = ImagePipeline(get_model_spec("efficientnet_lite0").preprocess(), train=False)
    x = pipeline.from_image(Image.fromarray(coffee()))[None]
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    assert int(probs.argmax()) == ESPRESSO
    assert float(probs[ESPRESSO]) > 0.8
    # Converted once, then reused from the cache.
    cached = convert_lite0_package_weights()
    assert cached.parent == weights_cache / "weights"
    mtime = cached.stat().st_mtime_ns
    assert convert_lite0_package_weights() == cached and cached.stat().st_mtime_ns == mtime


def test_lite0_imagenet_keeps_backbone_and_makes_fresh_head() -> None:
    full = create_model("efficientnet_lite0", num_classes=1000, weights="imagenet")
    small = create_model("efficientnet_lite0", num_classes=4, weights="imagenet")
    assert small.classifier.out_features == 4
    torch.testing.assert_close(small.conv_stem.weight, full.conv_stem.weight)
    torch.testing.assert_close(small.blocks[3][1].conv_dw.weight, full.blocks[3][1].conv_dw.weight)
    assert float(small.classifier.weight.detach().std()) < 0.05  # small init, not timm's 1/sqrt(4)


def test_hub_only_weights_fail_offline_with_the_fix(tmp_path: Path) -> None:
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("timm/resnet50.a1_in1k", "model.safetensors"), str):
        pytest.skip("this machine has resnet50 in its Hugging Face cache")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(WeightsNotFoundError) as info:
        create_model("resnet50", num_classes=3, weights="imagenet")
    msg = str(info.value)
    assert "resnet50.safetensors" in msg and WEIGHTS_DIR_ENV in msg and "weights: none" in msg


def test_imagenet_weights_from_a_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file

    # Stand-in for a downloaded timm checkpoint: same layout, 1000-class head.
    donor = create_model("efficientnet_b0", num_classes=1000, weights="none")
    folder = tmp_path / "my_weights"
    folder.mkdir()
    save_file(
        {k: v.contiguous() for k, v in donor.state_dict().items()},
        str(folder / "efficientnet_b0.safetensors"),
    )
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(folder))
    model = create_model("efficientnet_b0", num_classes=3, weights="imagenet")
    assert "local file" in get_weights_source(model)
    assert str(folder / "efficientnet_b0.safetensors") in get_weights_source(model)
    torch.testing.assert_close(model.conv_stem.weight, donor.conv_stem.weight)
    assert model.classifier.out_features == 3


def test_custom_cnn_has_no_imagenet_weights() -> None:
    with pytest.raises(WeightsNotFoundError, match="no ImageNet weights"):
        create_model("custom_cnn", num_classes=3, weights="imagenet")


def test_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModelError, match="custom_cnn"):
        create_model("resnet5O", num_classes=3)


@pytest.mark.slow
def test_weights_path_round_trip_and_head_mismatch(tmp_path: Path) -> None:
    donor = create_model("custom_cnn", num_classes=3, weights="none")
    with torch.no_grad():
        donor.classifier.weight.add_(1.0)
    path = tmp_path / "donor.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in donor.state_dict().items()}}, path)

    same = create_model("custom_cnn", num_classes=3, weights=str(path))
    for k, v in donor.state_dict().items():
        torch.testing.assert_close(same.state_dict()[k], v)
    assert get_weights_source(same) == f"file {path.resolve()}"

    other = create_model("custom_cnn", num_classes=7, weights=str(path))
    source = get_weights_source(other)
    assert "head dropped" in source and "3 classes" in source and "7" in source
    torch.testing.assert_close(other.stem[0].weight, donor.stem[0].weight)
    assert other.classifier.out_features == 7


def test_bad_weights_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_model("custom_cnn", num_classes=3, weights=str(tmp_path / "nope.pth"))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        create_model("custom_cnn", num_classes=3, weights=str(corrupt))
    corrupt_st = tmp_path / "corrupt.safetensors"
    corrupt_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        create_model("efficientnet_lite0", num_classes=3, weights=str(corrupt_st))
    # Weights of another architecture: the backbone does not fit.
    foreign = tmp_path / "lite0.pth"
    torch.save(create_model("efficientnet_lite0", num_classes=3).state_dict(), foreign)
    with pytest.raises(CheckpointError, match="does not fit"):
        create_model("custom_cnn", num_classes=3, weights=str(foreign))
    assert corrupt.read_bytes().startswith(b"\x80\x04 this")  # never rewritten


def test_untrusted_pickle_is_refused(tmp_path: Path) -> None:
    """weights_only=True: a pickle that would run code is a CheckpointError, not an execution.

    The payload creates a marker file when unpickled; the control load (plain `torch.load`)
    proves it does. Breakage tried: `weights_only=False` in `load_state_dict_file`; the load
    still ends in a CheckpointError ("holds no tensors"), which the old test accepted; the
    message match and, on its own, the marker now fail.
    """
    control_marker = tmp_path / "control-ran"
    control = tmp_path / "control.pth"
    torch.save({"obj": _Evil(control_marker)}, control)
    torch.load(control, weights_only=False)  # the unsafe load this test guards against
    assert control_marker.is_file(), "the payload does not run: the test below proves nothing"

    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": np.ones(3)}, "obj": _Evil(marker)}, evil)
    with pytest.raises(CheckpointError, match="corrupt or not a weights file"):
        create_model("custom_cnn", num_classes=3, weights=str(evil))
    assert not marker.exists(), "loading the weights file executed its pickled code"


class _Evil:
    """Unpickles as `open(marker, "w")`: the marker file exists iff the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
