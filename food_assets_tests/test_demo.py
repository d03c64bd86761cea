"""The Gradio demo's service, without a browser: predictions, Grad-CAM, bad uploads, caching."""

from __future__ import annotations

import inspect
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from food_assets import demo
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import UnknownModelError
from food_assets_tests.images import noisy_jpeg
from food_assets_tests.reference import (
    assert_reference_discriminates,
    assert_top_k_matches,
    reference_top_k,
    spread_logits,
)

MODEL = "custom_cnn"
CLASSES = ["pizza", "donuts", "waffles", "french_fries"]

# No skip when the entry is missing: custom_cnn ships, and losing it must fail these tests.


def make_model_dir(root: Path, *, bundle: bool = True, onnx: bool = True) -> Path:
    """A data folder laid out like a run's (`artifacts/model_<m>/bundle`, `onnx_<m>/model.onnx`).

    The network is untrained, but `spread_logits` makes its answers decisive (fresh, it gives
    every class 1/4 whatever the image), so the classes get different probabilities, the
    temperature (1.5) matters and Grad-CAM has a gradient to follow.
    """
    from food_assets import catalog
    from food_assets.ml.export import export_onnx
    from food_assets.ml.models.bundle import ModelCard, save_bundle
    from food_assets.ml.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=len(CLASSES), weights="none").eval()
    spread_logits(model, 64, seed=0)
    card = ModelCard(
        name=MODEL,
        class_names=CLASSES,
        preprocess=Preprocess(input_size=64, crop_pct=0.9),
        temperature=1.5,
    )
    if bundle:
        save_bundle(catalog.bundle_path(MODEL, root), model, card)
    if onnx:
        export_onnx(model, card, catalog.onnx_path(MODEL, root))
    return root


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bundle and ONNX export, plus an evaluation's metrics.json."""
    root = make_model_dir(tmp_path_factory.mktemp("full") / "data")
    metrics = root / "artifacts" / f"evaluation_{MODEL}" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"test/acc_top1": 0.8125}')
    return root


def _copy_part(full_dir: Path, part: str, dest: Path) -> Path:
    # Copies of the full folder's files: another ONNX export would cost seconds.
    shutil.copytree(full_dir / "artifacts" / part, dest / "artifacts" / part)
    return dest


@pytest.fixture(scope="module")
def onnx_only_dir(full_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_part(full_dir, f"onnx_{MODEL}", tmp_path_factory.mktemp("onnx") / "data")


#: The temperature evaluation_<MODEL> fitted, in its own calibration.json: what a bundle answers
#: with (ADR 0009), deliberately not the card's 1.5.
CALIBRATED_T = 2.0


@pytest.fixture(scope="module")
def bundle_only_dir(full_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _copy_part(full_dir, f"model_{MODEL}", tmp_path_factory.mktemp("bundle") / "data")
    calibration = root / "artifacts" / f"evaluation_{MODEL}" / "calibration.json"
    calibration.parent.mkdir(parents=True)
    calibration.write_text(f'{{"temperature": {CALIBRATED_T}}}')
    return root


@pytest.fixture(scope="module")
def service(full_dir: Path) -> demo.DemoService:
    return demo.DemoService(full_dir)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return noisy_jpeg(tmp_path / "photo.jpg", size=(320, 240))


def test_predict_returns_top3_and_gradcam_overlay(service: demo.DemoService, photo: Path) -> None:
    result = service.predict(photo, MODEL)
    assert result.ok, result.message
    assert len(result.top) == 3 and set(result.top) <= set(CLASSES)
    probs = list(result.top.values())
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert result.overlay is not None
    side = demo.OVERLAY_MIN_PX  # a 64 px model input, upscaled for the page
    assert result.overlay.shape == (side, side, 3) and result.overlay.dtype == np.uint8
    # The answer came from the ONNX export (faster); the info box says which file and accuracy.
    assert "ONNX Runtime" in result.info and "model.onnx" in result.info
    assert "81.2%" in result.info


@pytest.mark.parametrize("source", ["onnx", "bundle"])
def test_predict_reports_the_models_own_top3(
    full_dir: Path, bundle_only_dir: Path, tmp_path: Path, source: str
) -> None:
    """The page's top 3 are the bundle's own softmax(logits / T): same classes, same order, same
    probabilities, from the ONNX export (full folder) and from the bundle alone.

    The expected answer comes from `load_bundle` and eager PyTorch, not from the predictor.
    Breakages tried, each fails this test: class names reversed in `Predictor._setup`
    (`tuple(class_names)[::-1]`); the temperature ignored there; `_classify` ranking ascending.
    """
    from food_assets import catalog

    rng = np.random.default_rng(7)
    photos = []
    for name, (w, h) in (("upload.png", (96, 80)), ("upload.jpg", (120, 100))):
        # Small enough that the service decodes them whole (no JPEG draft): the reference
        # then sees the same pixels.
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / name)
        photos.append(tmp_path / name)
    bundle = catalog.bundle_path(MODEL, full_dir)
    decoded = [Image.open(p).convert("RGB") for p in photos]
    # The export embeds its temperature (the card's here); a bundle takes the evaluation's.
    expected = reference_top_k(
        bundle, decoded, temperature=None if source == "onnx" else CALIBRATED_T
    )
    assert_reference_discriminates(bundle, decoded, expected)
    service = demo.DemoService(full_dir if source == "onnx" else bundle_only_dir)
    for path, top in zip(photos, expected, strict=True):
        result = service.predict(path, MODEL)
        assert result.ok, result.message
        assert ("ONNX Runtime" if source == "onnx" else "PyTorch bundle") in result.info
        assert_top_k_matches(list(result.top.items()), top[: demo.TOP_K])


def test_bundled_examples_predict(service: demo.DemoService) -> None:
    examples = demo.example_images()
    assert 3 <= len(examples) <= 4
    for path in examples:
        assert Image.open(path).size == (256, 256)
        result = service.predict(path, None)
        assert result.ok and result.overlay is not None


def test_bundle_only_uses_pytorch(bundle_only_dir: Path, photo: Path) -> None:
    result = demo.DemoService(bundle_only_dir).predict(photo, MODEL)
    assert result.ok and result.overlay is not None
    assert "PyTorch bundle" in result.info and "unknown" in result.info


def test_onnx_only_predicts_and_says_gradcam_needs_bundle(onnx_only_dir: Path, photo) -> None:
    result = demo.DemoService(onnx_only_dir).predict(photo, MODEL)
    assert result.ok and len(result.top) == 3
    assert result.overlay is None
    assert "Grad-CAM needs the trained-model bundle" in result.info


def _text_file(path: Path) -> Path:
    path = path.with_suffix(".txt")
    path.write_text("hello, not a photo")
    return path


def _empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _truncated_jpeg(path: Path) -> Path:
    good = noisy_jpeg(path.with_name("good.jpg")).read_bytes()
    path.write_bytes(good[: len(good) // 3])
    return path


def _jpeg_header_only(path: Path) -> Path:
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_text_file, "not an image"),
        (_empty_file, "empty file"),
        (_truncated_jpeg, "truncated or corrupt"),
        (_jpeg_header_only, "Not a usable image"),
    ],
    ids=["text", "empty", "truncated", "jpeg-header-only"],
)
def test_bad_uploads_give_a_message(service: demo.DemoService, tmp_path: Path, make, expected):
    path = make(tmp_path / "upload.jpg")
    result = service.predict(path, MODEL)
    assert not result.ok and not result.top and result.overlay is None
    assert expected in result.message
    # The service keeps answering after a bad file.
    assert service.predict(noisy_jpeg(tmp_path / "ok.jpg"), MODEL).ok


def test_too_large_upload_is_refused(full_dir: Path, tmp_path: Path) -> None:
    big = noisy_jpeg(tmp_path / "big.jpg", size=(640, 480), quality=95)  # about 0.4 MB
    small_limit = demo.DemoService(full_dir, max_upload_mb=0.1)
    result = small_limit.predict(big, MODEL)
    assert "File too large" in result.message and "0.1 MB" in result.message
    assert not result.top and small_limit.load_count == 0  # refused before loading anything


def test_missing_upload_is_not_an_error(service: demo.DemoService) -> None:
    result = service.predict(None, MODEL)
    assert not result.message and not result.top and MODEL in result.info


def test_model_is_loaded_once(full_dir: Path, photo: Path, monkeypatch) -> None:
    calls: list[str] = []
    real = demo.load_model

    def counting(entry, *args):
        calls.append(entry.name)
        return real(entry, *args)

    monkeypatch.setattr(demo.service, "load_model", counting)  # where DemoService looks it up
    service = demo.DemoService(full_dir)
    # Four first requests at once, then more: one load in all.
    threads = [threading.Thread(target=service.predict, args=(photo, MODEL)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for _ in range(3):
        assert service.predict(photo, MODEL).ok
    assert calls == [MODEL] and service.load_count == 1


def test_no_model_says_how_to_make_one(tmp_path: Path, photo: Path) -> None:
    service = demo.DemoService(tmp_path / "empty")
    result = service.predict(photo, None)
    assert "make run" in result.message and "food-assets train" in result.message


def test_unknown_model_is_a_clear_error(full_dir: Path) -> None:
    with pytest.raises(UnknownModelError, match="resnet50.*materialized: custom_cnn"):
        demo.DemoService(full_dir, default_model="resnet50")


def test_model_given_as_a_path(full_dir: Path, photo: Path, tmp_path: Path) -> None:
    from food_assets import catalog

    onnx_file = catalog.onnx_path(MODEL, full_dir)
    service = demo.DemoService(tmp_path / "elsewhere", default_model=str(onnx_file))
    result = service.predict(photo, None)
    assert result.ok and str(onnx_file) in result.info


def test_build_app_and_launch_signature(full_dir: Path, tmp_path: Path) -> None:
    import gradio as gr

    app = demo.build_app(MODEL, data_dir=full_dir, max_upload_mb=5)
    assert isinstance(app, gr.Blocks)
    assert app.demo_service.default_model == MODEL and app.demo_service.max_upload_mb == 5
    assert "predict" in {fn.api_name for fn in app.fns.values()}
    # An empty data folder still builds a page (that says how to make a model).
    assert isinstance(demo.build_app(data_dir=tmp_path / "empty"), gr.Blocks)
    # The CLI calls launch with these keywords.
    assert list(inspect.signature(demo.launch).parameters) == [
        "model", "host", "port", "share", "max_upload_mb",
    ]  # fmt: skip


def test_default_model_is_the_best_evaluated(full_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    export = full_dir / "artifacts" / f"onnx_{MODEL}" / "model.onnx"
    for name in (MODEL, "other", "unevaluated"):
        # The catalog keys models by folder name: copies of one export stand in for three models.
        (root / "artifacts" / f"onnx_{name}").mkdir(parents=True)
        shutil.copy2(export, root / "artifacts" / f"onnx_{name}" / "model.onnx")
    for name, acc in ((MODEL, 0.5), ("other", 0.75)):
        metrics = root / "artifacts" / f"evaluation_{name}" / "metrics.json"
        metrics.parent.mkdir(parents=True)
        metrics.write_text(f'{{"test/acc_top1": {acc}}}')
    service = demo.DemoService(root)
    assert service.model_names() == [MODEL, "other", "unevaluated"]
    assert service.default_model == "other"


def test_demo_serves_fp32_without_an_int8_export_and_refuses_int8(
    full_dir: Path, photo: Path
) -> None:
    """Breakage caught: the demo ignoring its precision (an int8 request answered by fp32 with
    no word), not saying which precision answered, or accepting an unknown precision."""
    from food_assets.ml.errors import ConfigError

    auto = demo.DemoService(full_dir).predict(photo, MODEL)
    assert auto.ok and "ONNX Runtime fp32" in auto.info and "int8 not served" in auto.info
    int8 = demo.DemoService(full_dir, precision="int8").predict(photo, MODEL)
    assert not int8.ok and "int8 export cannot be served" in int8.message
    with pytest.raises(ConfigError, match="precision must be one of"):
        demo.DemoService(full_dir, precision="fp16")
