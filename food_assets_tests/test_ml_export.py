"""ONNX export: dynamic batch, metadata, atomic writes, parity (and its failure), latency."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import CheckpointError
from food_assets.ml.export import (
    OnnxMetadata,
    check_parity,
    create_session,
    export_onnx,
    latency_ratio,
    load_onnx,
    measure_latency,
)
from food_assets.ml.export.metadata import K_CLASSES, K_PREPROCESS, K_TEMPERATURE
from food_assets.ml.models.bundle import ModelCard
from food_assets.ml.models.registry import create_model, get_model_spec, list_models
from food_assets_tests.conftest import registry_param

PRE = Preprocess(input_size=32, interpolation="bicubic", crop_pct=0.9)
CLASSES = ["apple_pie", "pizza", "sushi"]


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _card(name: str = "tinynet", temperature: float = 1.5) -> ModelCard:
    return ModelCard(name=name, class_names=CLASSES, preprocess=PRE, temperature=temperature)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = TinyNet().eval()
    path = export_onnx(model, _card(), tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return model, path


def test_export_metadata_and_dynamic_batch(tiny) -> None:
    model, path = tiny
    data, meta = load_onnx(path)
    assert meta == OnnxMetadata("tinynet", tuple(CLASSES), PRE, 1.5)
    proto = onnx.load(path)
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # symbolic batch axis
    session = create_session(data)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        out = session.run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(out, model(x).detach().numpy(), atol=1e-5)
    assert not list(path.parent.glob(".*"))  # no temporary left behind


def test_parity_passes_then_fails_on_a_perturbed_initializer(tiny, tmp_path) -> None:
    model, path = tiny
    images = torch.randn(6, 3, 32, 32)
    report = check_parity(path, model, images)
    assert report.passed and report.n_images == 6 and report.top1_agreement == 1.0
    assert report.max_abs_diff <= report.atol == 1e-4

    proto = onnx.load(path)
    # Break the classifier: the largest initializer with the head's shape, changed by a lot.
    init = next(i for i in proto.graph.initializer if tuple(i.dims) in ((3, 16), (16, 3)))
    arr = numpy_helper.to_array(init).copy()
    arr[np.unravel_index(np.abs(arr).argmax(), arr.shape)] += 5.0
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, broken)

    bad = check_parity(broken, model, images)
    assert not bad.passed and bad.max_abs_diff > 1e-2
    # The metadata is intact but the graph hash no longer matches: loading refuses it.
    with pytest.raises(CheckpointError, match="changed after export"):
        load_onnx(broken)


def _tamper(src, dst, key: str, value: str | None) -> None:
    proto = onnx.load(src)
    props = [p for p in proto.metadata_props if p.key != key]
    del proto.metadata_props[:]
    proto.metadata_props.extend(props)
    if value is not None:
        e = proto.metadata_props.add()
        e.key, e.value = key, value
    onnx.save(proto, dst)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (K_CLASSES, None, "metadata lacks"),
        (K_CLASSES, "pizza, sushi", "not valid JSON"),
        (K_CLASSES, json.dumps(["pizza", 3]), "list of strings"),
        (K_CLASSES, json.dumps(["pizza", "pizza"]), "duplicates"),
        (K_TEMPERATURE, "-1.0", "positive"),
        (K_TEMPERATURE, "nan", "positive"),
        (K_PREPROCESS, json.dumps({"input_size": 32}), "exactly the fields"),
        (K_PREPROCESS, json.dumps({**PRE.to_dict(), "input_size": "32"}), "input_size"),
        (K_PREPROCESS, json.dumps({**PRE.to_dict(), "std": [0.2, 0.0, 0.2]}), "std"),
        (K_PREPROCESS, json.dumps({**PRE.to_dict(), "interpolation": "lanczos"}), "interp"),
    ],
)
def test_tampered_metadata_is_refused(tiny, tmp_path, key, value, message) -> None:
    dst = tmp_path / "tampered.onnx"
    _tamper(tiny[1], dst, key, value)
    with pytest.raises(CheckpointError, match=message):
        load_onnx(dst)


def test_corrupt_or_missing_file_is_refused(tiny, tmp_path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot an onnx file" * 10)
    with pytest.raises(CheckpointError):
        load_onnx(garbage)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(tiny[1].read_bytes()[:500])
    with pytest.raises(CheckpointError):
        load_onnx(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_onnx(tmp_path / "nope.onnx")


def test_failed_export_leaves_the_previous_file(tiny, tmp_path, monkeypatch) -> None:
    model, good = tiny
    target = tmp_path / "model.onnx"
    target.write_bytes(good.read_bytes())
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # an interrupted run, halfway through writing

    monkeypatch.setattr(onnx, "save_model", boom)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(model, _card(), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    monkeypatch.undo()

    fresh = tmp_path / "fresh.onnx"
    monkeypatch.setattr(onnx, "save_model", boom)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(model, _card(), fresh)
    assert not fresh.exists()


def test_unexportable_model_is_a_clear_error(tmp_path) -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = self.lin(x.mean(dim=(2, 3)))
            # Python control flow on a tensor value: torch.export cannot trace it.
            return v if float(v.sum()) > 0 else -v

    with pytest.raises(CheckpointError, match="could not export model 'dd'.*onnx=False"):
        export_onnx(DataDependent(), _card("dd"), tmp_path / "dd.onnx")
    assert not (tmp_path / "dd.onnx").exists()


def test_vit_exports_with_parity(tmp_path) -> None:
    import timm  # a hard dependency: its absence is an error, not a skip

    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=3, depth=2
    ).eval()
    path = export_onnx(model, _card("vit"), tmp_path / "vit.onnx")
    assert check_parity(path, model, torch.randn(3, 3, 32, 32)).passed


def test_measure_latency_table(tiny) -> None:
    model, path = tiny
    frame = measure_latency(model, path, 32, batch_sizes=(1, 4), repeats={1: 3, 4: 2}, warmup=1)
    assert list(frame.columns) == [
        "model", "backend", "batch", "median_ms", "p90_ms", "images_per_s", "repeats", "threads",
    ]  # fmt: skip
    assert frame["threads"].eq(frame["threads"].iloc[0]).all() and frame["threads"].iloc[0] >= 1
    assert sorted(zip(frame["backend"], frame["batch"], strict=True)) == [
        ("eager", 1), ("eager", 4), ("onnxruntime", 1), ("onnxruntime", 4),
    ]  # fmt: skip
    assert (frame["median_ms"] > 0).all() and (frame["p90_ms"] >= frame["median_ms"]).all()
    assert frame.loc[frame["batch"] == 4, "repeats"].eq(2).all()
    ratio = latency_ratio(frame)
    assert len(ratio) == 2 and (ratio["ort_over_eager"] > 0).all()
    assert not model.training


# ---------------------------------------------------------------------------------------------
# Every registry model


def _registry_params() -> list:
    params = []
    for name in list_models():
        spec = get_model_spec(name)
        # CNNs take any input size, so they run small; ViTs have fixed position embeddings and
        # export at their native size, which takes tens of seconds on 2 cores.
        # Only the from-scratch CNN stays in the fast subset: each timm export takes 5-10 s here.
        params.append(registry_param(name, slow=spec.family != "scratch"))
    return params


@pytest.mark.parametrize("name", _registry_params())
def test_registry_model_exports_with_parity(name: str, tmp_path) -> None:
    spec = get_model_spec(name)
    # Every shipped entry exports to ONNX: one that loses it fails here, it does not skip.
    assert spec.onnx, f"{name} is registered with onnx=False"
    torch.manual_seed(0)
    model = create_model(name, num_classes=len(CLASSES), weights="none").eval()
    with torch.no_grad():
        # Untrained heads and class matrices may start at zero (e.g. CLIP zero-shot without
        # weights), which would make parity trivially exact; give them values to compare.
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point() and tensor.numel() and not tensor.any():
                tensor.normal_(0, 0.05)
    native = spec.preprocess()
    size = 32 if spec.family in ("scratch", "transfer") else native.input_size
    card = ModelCard(name=name, class_names=CLASSES, preprocess=native.with_size(size))
    path = export_onnx(model, card, tmp_path / f"{name}.onnx")
    _, meta = load_onnx(path)
    assert meta.model_name == name and meta.preprocess.input_size == size
    images = torch.randn(3, 3, size, size)
    report = check_parity(path, model, images)
    assert report.passed, report
    logits = model(images).detach()
    assert float(logits.std()) > 0  # the comparison was between non-trivial outputs
