"""Predictors (ONNX and bundle): folders with bad files, metadata checks, agreement, dispatch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from food_assets.ml.data.transforms import ImagePipeline, Preprocess
from food_assets.ml.errors import CheckpointError, DataSourceError
from food_assets.ml.export import export_onnx
from food_assets.ml.export.metadata import K_TEMPERATURE
from food_assets.ml.inference import (
    OnnxPredictor,
    TorchPredictor,
    iter_image_files,
    load_predictor,
    softmax,
)
from food_assets.ml.models.bundle import ModelCard, save_bundle
from food_assets.ml.models.registry import create_model
from food_assets_tests.reference import (
    assert_reference_discriminates,
    assert_top_k_matches,
    reference_top_k,
    spread_logits,
)

CLASSES = ["apple_pie", "pizza", "sushi"]
PRE = Preprocess(input_size=32, crop_pct=0.9)
MODEL = "custom_cnn"

# No skip when the entry is missing: custom_cnn ships, and losing it must fail these tests.


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory):
    """A custom_cnn bundle and its ONNX export (random weights, temperature 2).

    `spread_logits` makes the untrained network's answers decisive: fresh, it gives every class
    1/3 whatever the image, and no class order or temperature could be told apart.
    """
    root = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=len(CLASSES), weights="none").eval()
    spread_logits(model, PRE.input_size, seed=0)
    card = ModelCard(name=MODEL, class_names=CLASSES, preprocess=PRE, temperature=2.0)
    bundle = save_bundle(root / "bundle", model, card)
    onnx_path = export_onnx(model, card, root / "export" / f"{MODEL}.onnx")
    return model, bundle, onnx_path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory):
    """Good images in nested folders, a corrupt JPEG, an empty file, hidden and non-image files."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    (root / ".hidden_dir").mkdir()
    for name, size in [("b.jpg", (50, 40)), ("a.png", (40, 60)), ("sub/c.JPG", (64, 64))]:
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / name, format="JPEG" if "jpg" in name.lower() else "PNG")
    Image.new("RGB", (10, 10)).save(root / ".hidden.png")
    Image.new("RGB", (10, 10)).save(root / ".hidden_dir" / "x.png")
    (root / "broken.jpg").write_bytes((root / "b.jpg").read_bytes()[:40] + b"\x00" * 5)
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return root


def test_iter_image_files_sorted_and_skips_hidden(folder) -> None:
    names = [p.relative_to(folder).as_posix() for p in iter_image_files(folder)]
    assert names == ["a.png", "b.jpg", "broken.jpg", "empty.png", "sub/c.JPG"]
    flat = [p.name for p in iter_image_files([folder], recursive=False)]
    assert "c.JPG" not in flat
    explicit = list(iter_image_files(folder / "notes.txt"))  # named explicitly: kept
    assert [p.name for p in explicit] == ["notes.txt"]
    with pytest.raises(DataSourceError, match="does not exist"):
        list(iter_image_files(folder / "missing"))


@pytest.mark.parametrize("kind", ["onnx", "torch"])
def test_predict_folder_with_bad_files(kind, artifacts, folder) -> None:
    """Each good file's top-k is the bundle's own softmax(logits / T), in order, whatever the
    bad files and batch boundaries around it.

    Breakages tried, each fails this test: class names reversed in `Predictor._setup`
    (`tuple(class_names)[::-1]`); the temperature ignored there (`self.temperature = 1.0`);
    results ranked ascending in `predict_paths`; a file's probabilities taken from the next row
    of the batch.
    """
    _, bundle, onnx_path = artifacts
    predictor = OnnxPredictor(onnx_path) if kind == "onnx" else TorchPredictor(bundle)
    assert predictor.class_names == tuple(CLASSES) and predictor.model_name == MODEL
    files = list(iter_image_files(folder))
    # batch_size 2 with errors in between: order must still follow the input.
    results = list(predictor.predict_paths(files, top_k=2, batch_size=2))
    assert [r.path for r in results] == [str(f) for f in files]
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in results}
    assert by_name["broken.jpg"].error == "truncated or corrupt"
    assert by_name["empty.png"].error == "empty file"
    good = [f for f in files if f.name in ("a.png", "b.jpg", "c.JPG")]
    expected = reference_top_k(bundle, good)
    assert_reference_discriminates(bundle, good, expected)
    for f, top in zip(good, expected, strict=True):
        r = by_name[f.name]
        assert r.ok and r.label == top[0][0]
        assert_top_k_matches(r.top_k, top[:2])
    # All classes: the whole ranking, not only its head.
    full = list(predictor.predict_paths(good, top_k=len(CLASSES) + 5))  # k is capped at C
    for r, top in zip(full, expected, strict=True):
        assert_top_k_matches(r.top_k, top)
    assert not by_name["broken.jpg"].top_k and by_name["broken.jpg"].label is None


def test_onnx_and_torch_predictors_agree_with_temperature(artifacts, folder) -> None:
    model, bundle, onnx_path = artifacts
    images = [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))[:1]]
    images += [Image.open(folder / "b.jpg").convert("RGB")]
    p_onnx = OnnxPredictor(onnx_path, threads=1).predict_images(images)
    p_torch = TorchPredictor(bundle).predict_images(images)
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-5)
    np.testing.assert_allclose(p_onnx.sum(axis=1), 1.0, atol=1e-5)
    pipe = ImagePipeline(PRE)
    x = torch.stack([pipe.from_image(im) for im in images])
    with torch.no_grad():
        expected = torch.softmax(model(x) / 2.0, dim=1).numpy()
    np.testing.assert_allclose(p_torch, expected, atol=1e-5)
    assert OnnxPredictor(onnx_path).predict_images([]).shape == (0, len(CLASSES))


def test_softmax_is_stable() -> None:
    p = softmax(np.array([[1000.0, 0.0, -1000.0]]), temperature=1.0)
    assert np.isfinite(p).all() and p[0, 0] == pytest.approx(1.0)


def test_load_predictor_dispatch(artifacts, tmp_path) -> None:
    _, bundle, onnx_path = artifacts
    assert isinstance(load_predictor(onnx_path), OnnxPredictor)
    assert isinstance(load_predictor(bundle), TorchPredictor)
    assert isinstance(load_predictor(onnx_path.parent), OnnxPredictor)  # folder with one export
    with pytest.raises(CheckpointError, match="neither an .onnx file nor a model bundle"):
        load_predictor(tmp_path)


def test_tampered_onnx_is_refused(artifacts, tmp_path) -> None:
    _, _, onnx_path = artifacts
    proto = onnx.load(onnx_path)
    for p in proto.metadata_props:
        if p.key == K_TEMPERATURE:
            p.value = "0"
    bad = tmp_path / "tampered.onnx"
    onnx.save(proto, bad)
    with pytest.raises(CheckpointError, match="temperature"):
        load_predictor(bad)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"definitely not protobuf" * 3)
    with pytest.raises(CheckpointError):
        OnnxPredictor(garbage)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"temperature": 0}, "temperature"),
        ({"class_names": "pizza"}, "class_names"),
        ({"preprocess": {**PRE.to_dict(), "input_size": 0}}, "input_size"),
        ({"preprocess": {**PRE.to_dict(), "interpolation": "lanczos"}}, "interpolation"),
    ],
)
def test_bundle_with_bad_card_is_refused(artifacts, tmp_path, patch, message) -> None:
    _, bundle, _ = artifacts
    dst = tmp_path / "bundle"
    dst.mkdir()
    (dst / "model.safetensors").write_bytes((bundle / "model.safetensors").read_bytes())
    card = json.loads((bundle / "card.json").read_text())
    card.update(patch)
    (dst / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=message):
        load_predictor(dst)
