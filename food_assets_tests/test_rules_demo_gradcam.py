"""The demo's answer and its Grad-CAM overlay against a Grad-CAM worked out by hand.

The reference is computed here from the bundle's network with two hooks (activations and
their gradient for the top class), the Grad-CAM formula (channel weights = mean gradient,
ReLU of the weighted sum, min-max scaled, resized to the input) and the library's colouring,
so a demo that explains another class, another layer or another image gives another overlay.
Self-contained: its own bundle, public functions only.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from food_assets import catalog
from food_assets.demo.service import OVERLAY_MIN_PX, DemoService
from food_assets.ml.data.transforms import ImagePipeline, Preprocess, denormalize
from food_assets.ml.models.bundle import ModelCard, load_bundle, save_bundle
from food_assets.ml.models.registry import create_model, get_model_spec, resolve_cam_layer
from food_assets_tests.reference import spread_logits

MODEL = "custom_cnn"  # shipped: its registry entry has a Grad-CAM layer (no skip if it loses it)
CLASSES = ["pizza", "donuts", "waffles", "french_fries"]
SIZE = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo_cam") / "data"
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=len(CLASSES), weights="none").eval()
    spread_logits(model, SIZE, seed=1)
    card = ModelCard(MODEL, CLASSES, Preprocess(input_size=SIZE, crop_pct=1.0), temperature=1.0)
    save_bundle(catalog.bundle_path(MODEL, root), model, card)
    return root


def _photo(path: Path, seed: int) -> Path:
    """A square photo of the model's size: decoded and resized as-is, no JPEG draft."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    arr[: SIZE // 2, : SIZE // 2] = 255  # a bright corner gives the CAM something to find
    Image.fromarray(arr).save(path)
    return path


def _hand_gradcam(bundle: Path, image: Image.Image, target: int | None) -> tuple[int, np.ndarray]:
    """(class explained, CAM in [0, 1] at the input size), from hooks and the formula."""
    model, card = load_bundle(bundle)
    layer = resolve_cam_layer(model, get_model_spec(MODEL).cam_layer)
    x = ImagePipeline(card.preprocess, train=False).from_image(image).unsqueeze(0)
    saved: dict[str, torch.Tensor] = {}

    def keep(_m, _a, out):
        out.register_hook(lambda g: saved.__setitem__("grad", g))
        saved["act"] = out

    handle = layer.register_forward_hook(keep)
    try:
        logits = model.eval()(x)
    finally:
        handle.remove()
    cls = int(logits.argmax(1)) if target is None else target
    logits[0, cls].backward()
    act, grad = saved["act"][0].detach().numpy(), saved["grad"][0].numpy()
    cam = np.maximum((grad.mean(axis=(1, 2))[:, None, None] * act).sum(0), 0)
    cam = cam - cam.min()
    cam = cam / (1e-7 + cam.max())
    return cls, cv2.resize(cam.astype(np.float32), (SIZE, SIZE))


def _colour(rgb: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The library's heat map at the demo's page size."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    heat = show_cam_on_image(rgb.astype(np.float32), cam, use_rgb=True)
    return np.asarray(Image.fromarray(heat).resize((OVERLAY_MIN_PX, OVERLAY_MIN_PX),
                                                  Image.Resampling.BILINEAR))  # fmt: skip


def test_the_overlay_is_the_gradcam_of_the_top_class(data: Path, tmp_path: Path) -> None:
    """Two photos; the demo's top class is the network's argmax and its overlay matches the
    hand-made Grad-CAM of that class, and not of any other class. Breakage seen failing: the
    overlay of the second-ranked class (`order[1]` in `_classify`), the input not denormalised
    before colouring (`x[0]` for `denormalize(x[0], pre)` in `_gradcam`)."""
    bundle = catalog.bundle_path(MODEL, data)
    model, card = load_bundle(bundle)
    service = DemoService(data)
    for seed in (3, 4):
        path = _photo(tmp_path / f"p{seed}.png", seed)
        image = Image.open(path).convert("RGB")
        result = service.predict(path, MODEL)
        assert result.ok, result.message
        top_class, cam = _hand_gradcam(bundle, image, None)
        assert next(iter(result.top)) == CLASSES[top_class]
        x = ImagePipeline(card.preprocess, train=False).from_image(image)
        rgb = denormalize(x, card.preprocess).permute(1, 2, 0).numpy()
        expected = _colour(rgb, cam)
        assert result.overlay is not None and result.overlay.shape == expected.shape
        diff = np.abs(result.overlay.astype(int) - expected.astype(int)).mean()
        assert diff < 2.0, diff
        # Every other class's CAM gives a visibly different overlay (the test can tell them
        # apart), and the raw input instead of the denormalised one does too.
        for other in set(range(len(CLASSES))) - {top_class}:
            _, other_cam = _hand_gradcam(bundle, image, other)
            far = np.abs(result.overlay.astype(int) - _colour(rgb, other_cam).astype(int)).mean()
            assert far > 4 * max(diff, 0.5), (other, far, diff)


def test_the_top3_probabilities_are_the_networks_softmax(data: Path, tmp_path: Path) -> None:
    """Independent of the predictor: softmax of the eager network's logits, top 3 in order.
    Breakage seen failing: `np.argsort(probs)` (ascending) in `_classify`."""
    bundle = catalog.bundle_path(MODEL, data)
    model, card = load_bundle(bundle)
    path = _photo(tmp_path / "p.png", 5)
    x = ImagePipeline(card.preprocess, train=False).from_image(Image.open(path).convert("RGB"))
    with torch.no_grad():
        probs = torch.softmax(model.eval()(x[None]).double(), 1)[0].numpy()
    order = np.argsort(-probs)[:3]
    assert len(set(np.round(probs, 6))) == len(probs)  # no ties: the order is determined
    result = DemoService(data).predict(path, MODEL)
    assert list(result.top) == [CLASSES[i] for i in order]
    np.testing.assert_allclose(list(result.top.values()), probs[order], rtol=1e-4)


def test_the_answer_says_which_model_and_no_overlay_without_a_bundle(data: Path, tmp_path) -> None:
    """The info box names the model that answered; an ONNX export alone answers with no overlay
    (None, not an empty value) and says why. Breakages seen failing (mutmut survivors):
    `info=None` or `describe(None)` in `_classify`, `overlay = ""` as the no-CAM value."""
    from food_assets.ml.export import export_onnx

    path = _photo(tmp_path / "p.png", 6)
    result = DemoService(data).predict(path, MODEL)
    assert f"**Model:** `{MODEL}` (PyTorch bundle)" in result.info
    assert "**Test top-1 accuracy:** unknown" in result.info
    model, card = load_bundle(catalog.bundle_path(MODEL, data))
    onnx_only = tmp_path / "onnx_only"
    export_onnx(model, card, catalog.onnx_path(MODEL, onnx_only))
    answer = DemoService(onnx_only).predict(path, MODEL)
    assert answer.ok and answer.overlay is None
    assert "Grad-CAM needs the trained-model bundle" in answer.info
