"""Predictors on models whose answers are worked out by hand (`make mutation` runs these).

Images are solid-colour PNGs at the model's input size (crop 1.0, so no resize moves a pixel);
with mean 0.5 and std 0.25 a channel value v becomes 4 v / 255 - 2 exactly. The models take the
mean of each channel times a weight matrix, so every probability below is a softmax of numbers
written in the test.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from food_assets.ml.data.images import ImageDecodeError
from food_assets.ml.data.transforms import ImagePipeline, Preprocess
from food_assets.ml.errors import CheckpointError, ConfigError, DataSourceError
from food_assets.ml.inference.predictor import (
    OnnxPredictor,
    PredictionResult,
    Predictor,
    TorchPredictor,
    iter_image_files,
    load_predictor,
    softmax,
)
from food_assets.ml.inference.serving import auto_label
from food_assets.ml.models.bundle import ModelCard, save_bundle
from food_assets.ml.models.registry import create_model
from food_assets_tests.tiny_onnx import tiny_onnx

CLASSES = ("apple_pie", "pizza", "sushi")
PRE = Preprocess(input_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)


def _norm(v: int) -> float:
    return 4 * v / 255 - 2


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(x - max(z)) for x in z]
    return [x / sum(e) for x in e]


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path, format="PNG")
    return path


class MeanPredictor(Predictor):
    """logits = channel means @ W; records the size of every batch it is asked for."""

    def __init__(self, weights: np.ndarray, temperature: float = 1.0, classes=CLASSES) -> None:
        self._setup("mean", list(classes), PRE, temperature)
        self.weights = weights
        self.batches: list[int] = []

    def _logits(self, batch: torch.Tensor) -> np.ndarray:
        self.batches.append(len(batch))
        return batch.mean(dim=(2, 3)).numpy().astype(np.float64) @ self.weights


# --- softmax ----------------------------------------------------------------------------------


def test_softmax_by_hand_with_temperature() -> None:
    logits = np.array([[0.0, math.log(3)], [2 * math.log(4), 0.0], [5.0, 5.0]])
    np.testing.assert_allclose(
        softmax(logits), [[0.25, 0.75], [16 / 17, 1 / 17], [0.5, 0.5]], rtol=1e-6
    )
    # T = 2 halves the logits: e^0 : e^ln4 = 1 : 4
    np.testing.assert_allclose(softmax(logits, 2.0)[1], [0.8, 0.2], rtol=1e-6)
    assert softmax(logits).dtype == np.float32


def test_softmax_computes_in_float64_and_rounds_once() -> None:
    logits = np.random.default_rng(0).normal(scale=4, size=(200, 10)).astype(np.float32)
    z = logits.astype(np.float64) / 1.5
    e = np.exp(z - z.max(axis=1, keepdims=True))
    want = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    np.testing.assert_array_equal(softmax(logits, 1.5), want)


def test_softmax_is_stable_per_row() -> None:
    # exp(1000) overflows; each row is shifted by its own maximum, so neither row degenerates
    out = softmax(np.array([[1000.0, 1000.0 - math.log(3), 0.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(
        out, [[0.75, 0.25, 0.0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6, atol=1e-12
    )
    assert softmax(np.array([[1.0, 2.0]])).shape == (1, 2)


# --- the Predictor base -----------------------------------------------------------------------


def test_setup_keeps_names_order_and_a_float_temperature() -> None:
    p = MeanPredictor(np.eye(3), temperature=2)
    assert p.class_names == CLASSES and p.model_name == "mean"
    assert p.preprocess == PRE
    assert p.temperature == 2.0 and type(p.temperature) is float


def test_predict_images_by_hand_and_deterministic() -> None:
    # a half red / half blue image: eval crop 1.0 keeps all of it; random crops would not
    arr = np.zeros((16, 16, 3), dtype=np.uint8)
    arr[:, :8, 0] = 255
    arr[:, 8:, 2] = 255
    img = Image.fromarray(arr)
    p = MeanPredictor(np.eye(3), temperature=2.0)
    # channel means: R (2 + -2)/2 = 0, G -2, B 0; / T = 2 -> 0, -1, 0
    want = _softmax([0.0, -1.0, 0.0])
    for _ in range(3):
        np.testing.assert_allclose(p.predict_images([img, img]), [want, want], rtol=1e-5)
    # any mode is converted to RGB first
    np.testing.assert_allclose(p.predict_images([img.convert("RGBA")])[0], want, rtol=1e-5)


def test_empty_inputs_give_empty_float32_arrays_without_calling_the_model() -> None:
    p = MeanPredictor(np.eye(3))
    for out in (p.predict_images([]), p.predict_tensor(torch.empty(0, 3, 16, 16))):
        assert out.shape == (0, 3) and out.dtype == np.float32
    assert p.batches == []


def test_predict_paths_ranks_batches_and_reports_bad_files(tmp_path: Path) -> None:
    w = np.eye(3)
    red = _png(tmp_path / "red.png", (255, 0, 51))  # 2, -2, -1.2
    yellow = _png(tmp_path / "yellow.png", (255, 255, 0))  # 2, 2, -2: a tie
    blue = _png(tmp_path / "sub" / "blue.png", (0, 102, 255))  # -2, -0.4, 2
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    try:
        ImagePipeline(PRE)(empty)
    except ImageDecodeError as exc:
        reason, detail = exc.reason, exc.detail

    p = MeanPredictor(w, temperature=2.0)
    out = list(p.predict_paths([red, empty, str(yellow), blue], top_k=2, batch_size=2))
    # the bad file does not count towards a batch: red + yellow, then blue
    assert p.batches == [2, 1]
    assert [r.path for r in out] == [str(red), str(empty), str(yellow), str(blue)]
    assert all(isinstance(r.path, str) for r in out)
    bad = out[1]
    assert bad == PredictionResult(str(empty), top_k=[], error=reason, detail=detail)
    assert not bad.ok and bad.label is None

    r = _softmax([2 / 2, -2 / 2, _norm(51) / 2])  # [apple_pie, pizza, sushi]
    assert out[0].ok and [c for c, _ in out[0].top_k] == ["apple_pie", "sushi"]
    np.testing.assert_allclose([v for _, v in out[0].top_k], [r[0], r[2]], rtol=1e-5)
    assert all(type(v) is float for _, v in out[0].top_k)
    # a tie keeps the class order
    assert [c for c, _ in out[2].top_k] == ["apple_pie", "pizza"]
    b = _softmax([-1.0, _norm(102) / 2, 1.0])
    assert [c for c, _ in out[3].top_k] == ["sushi", "pizza"]
    np.testing.assert_allclose([v for _, v in out[3].top_k], [b[2], b[1]], rtol=1e-5)
    assert out[3].label == "sushi"


def test_predict_paths_k_is_clamped_and_batches_default_to_32(tmp_path: Path) -> None:
    files = [_png(tmp_path / f"{i:02d}.png", (i * 7, 0, 0)) for i in range(33)]
    p = MeanPredictor(np.eye(3))
    out = list(p.predict_paths(files))
    assert p.batches == [32, 1]
    assert [len(r.top_k) for r in out] == [3] * 33  # default 5, only 3 classes
    assert all(len(r.top_k) == 1 for r in p.predict_paths(files[:2], top_k=0))
    assert all(len(r.top_k) == 3 for r in p.predict_paths(files[:2], top_k=3))


def test_predict_paths_each_file_gets_its_own_row_of_the_batch(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    files = [_png(tmp_path / f"{i}.png", c) for i, c in enumerate(colours)]
    p = MeanPredictor(np.eye(3))
    out = list(p.predict_paths(files, top_k=3, batch_size=2))
    assert p.batches == [2, 2, 1]
    for r, colour in zip(out, colours, strict=True):
        want = _softmax([_norm(v) for v in colour])
        got = dict(r.top_k)
        np.testing.assert_allclose([got[c] for c in CLASSES], want, rtol=1e-5)
    p = MeanPredictor(np.eye(3))
    out = list(p.predict_paths(files[:3], top_k=1))  # all three in one batch
    assert p.batches == [3] and [r.label for r in out] == list(CLASSES)


def test_predict_paths_default_k_is_5_and_ties_keep_the_class_order(tmp_path: Path) -> None:
    # 101 classes whose logits take 3 values (weights from 3 columns): long runs of ties
    classes = tuple(f"c{i:03d}" for i in range(101))
    cols = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    pick = np.random.default_rng(0).integers(0, 3, size=101)
    p = MeanPredictor(cols[:, pick], classes=classes)
    img = _png(tmp_path / "x.png", (255, 153, 0))  # channels 2, 0.4, -2
    (r,) = p.predict_paths([img])
    value = {0: 2.0, 1: _norm(153), 2: -2.0}
    want = sorted(range(101), key=lambda i: (-value[int(pick[i])], i))
    assert [c for c, _ in r.top_k] == [classes[i] for i in want[:5]]
    (r,) = p.predict_paths([img], top_k=101)
    assert [c for c, _ in r.top_k] == [classes[i] for i in want]


def test_a_bad_file_keeps_its_reason_and_detail(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("hello")
    (r,) = MeanPredictor(np.eye(3)).predict_paths([text])
    assert (r.error, r.detail) == ("not an image", "no image decoder recognises it")


def test_predict_paths_with_only_bad_files_never_calls_the_model(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"not an image")
    p = MeanPredictor(np.eye(3))
    out = list(p.predict_paths([tmp_path / "a.png"] * 3, batch_size=1))
    assert len(out) == 3 and not any(r.ok for r in out) and p.batches == []


def test_predict_paths_batches_of_one(tmp_path: Path) -> None:
    files = [_png(tmp_path / f"{i}.png", (0, 0, 0)) for i in range(3)]
    p = MeanPredictor(np.eye(3))
    assert len(list(p.predict_paths(files, batch_size=1))) == 3
    assert p.batches == [1, 1, 1]


# --- ONNX and bundle predictors ---------------------------------------------------------------

W = np.array([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0], [0.5, 0.0, 1.0]])


def test_onnx_predictor_reads_everything_from_the_file(tmp_path: Path) -> None:
    path = tiny_onnx(
        tmp_path / "m.onnx", W, class_names=CLASSES, preprocess=PRE, temperature=2.0, model_name="t"
    )
    p = OnnxPredictor(path, threads=1)
    assert p.path == path and p.model_name == "t" and p.class_names == CLASSES
    assert p.preprocess == PRE and p.temperature == 2.0
    assert p._session.get_session_options().intra_op_num_threads == 1
    assert p._session.get_providers() == ["CPUExecutionProvider"]
    img = _png(tmp_path / "c.png", (255, 0, 51))
    x = np.array([2.0, -2.0, _norm(51)])
    want = _softmax(list(x @ W / 2.0))
    (r,) = p.predict_paths([img], top_k=3)
    got = dict(r.top_k)
    np.testing.assert_allclose([got[c] for c in CLASSES], want, rtol=1e-5)
    if "AzureExecutionProvider" in ort.get_available_providers():  # a second provider to ask for
        both = ["AzureExecutionProvider", "CPUExecutionProvider"]
        assert OnnxPredictor(path, providers=both)._session.get_providers() == both
    # float64 input is accepted and fed as float32
    logits = p._logits(torch.zeros(1, 3, 16, 16, dtype=torch.float64))
    np.testing.assert_allclose(logits, [[0.0, 0.0, 0.0]], atol=1e-7)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = create_model("custom_cnn", num_classes=3, weights="none").eval()
    with torch.no_grad():
        for t in model.parameters():
            t.normal_(0, 0.5)  # decisive answers, so a wrong class order or T shows
    card = ModelCard(name="custom_cnn", class_names=list(CLASSES), preprocess=PRE, temperature=3.0)
    return save_bundle(tmp_path_factory.mktemp("bundle") / "b", model, card), model


def test_torch_predictor_matches_softmax_of_the_model_over_t(bundle, tmp_path: Path) -> None:
    path, model = bundle
    p = TorchPredictor(path)
    assert p.path == path and p.model_name == "custom_cnn" and p.class_names == CLASSES
    assert p.temperature == 3.0 and p.preprocess == PRE and p.device == torch.device("cpu")
    img = _png(tmp_path / "c.png", (200, 30, 90))
    with torch.no_grad():
        logits = model(ImagePipeline(PRE)(img)[None]).double().numpy()[0]
    want = _softmax(list(logits / 3.0))
    assert np.argmax(want) != np.argmin(want)
    (r,) = p.predict_paths([img], top_k=3)
    got = dict(r.top_k)
    np.testing.assert_allclose([got[c] for c in CLASSES], want, rtol=1e-4)
    assert r.label == CLASSES[int(np.argmax(want))]


def test_torch_predictor_loads_and_moves_the_model_to_its_device(bundle, monkeypatch) -> None:
    import food_assets.ml.models.bundle as bundle_module

    real = bundle_module.load_bundle
    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def to(self, device):
            seen["to"] = device
            return self

        def forward(self, x):
            return self.inner(x)

    def fake_load_bundle(path, *, map_location="cpu"):
        seen["map_location"] = map_location
        model, card = real(path, map_location="cpu")
        return Spy(model), card

    monkeypatch.setattr(bundle_module, "load_bundle", fake_load_bundle)
    p = TorchPredictor(bundle[0], device="cpu:0")
    assert seen == {"map_location": "cpu:0", "to": torch.device("cpu", 0)}
    assert p.device == torch.device("cpu", 0)


def test_torch_predictor_puts_the_model_in_eval_mode(bundle) -> None:
    p = TorchPredictor(bundle[0], device="cpu")
    assert not p._model.training


def test_torch_predictor_refuses_a_model_with_the_wrong_class_count(bundle) -> None:
    path, _ = bundle
    p = TorchPredictor(path)
    p.class_names = ("a", "b")  # what a card listing 2 classes for a 3-class head would give
    with pytest.raises(CheckpointError, match=r"returns shape \(1, 3\), not \(N, 2\)"):
        p.predict_tensor(torch.zeros(1, 3, 16, 16))


# --- load_predictor ---------------------------------------------------------------------------


def test_load_predictor_dispatch(bundle, tmp_path: Path) -> None:
    path, _ = bundle
    onnx_file = tiny_onnx(tmp_path / "x" / "m.ONNX", W, class_names=CLASSES, preprocess=PRE)
    assert isinstance(load_predictor(onnx_file), OnnxPredictor)
    assert isinstance(load_predictor(str(path)), TorchPredictor)
    # a folder with exactly one visible .onnx file (an onnx_<name> asset's folder)
    one = tmp_path / "one"
    tiny_onnx(one / "m.onnx", W, class_names=CLASSES, preprocess=PRE, model_name="only")
    (one / ".m.onnx").write_bytes(b"a hidden temporary")
    p = load_predictor(one, threads=1)
    assert isinstance(p, OnnxPredictor) and p.model_name == "only"
    assert p._session.get_session_options().intra_op_num_threads == 1


def test_load_predictor_forwards_keyword_arguments(bundle, tmp_path: Path, monkeypatch) -> None:
    import food_assets.ml.inference.predictor as P

    calls = []

    def record(kind: str):  # a stand-in predictor: load_predictor sets `.choice` on ONNX ones
        return lambda path, **kw: calls.append((kind, path, kw)) or SimpleNamespace()

    monkeypatch.setattr(P, "TorchPredictor", record("torch"))
    monkeypatch.setattr(P, "OnnxPredictor", record("onnx"))
    onnx_file = tiny_onnx(tmp_path / "m.onnx", W, class_names=CLASSES, preprocess=PRE)
    load_predictor(bundle[0], device="cuda")
    load_predictor(onnx_file, threads=2)
    load_predictor(tmp_path, providers=["CPUExecutionProvider"])
    assert calls == [
        ("torch", bundle[0], {"device": "cuda"}),
        # the serving rule's variant (backend, precision) travels with the caller's keywords
        ("onnx", onnx_file, {"backend": "onnxruntime", "precision": "fp32", "threads": 2}),
        ("onnx", onnx_file, {"backend": "onnxruntime", "precision": "fp32",
                             "providers": ["CPUExecutionProvider"]}),
    ]  # fmt: skip


@pytest.mark.parametrize("case", ["two", "none", "missing", "other_file"])
def test_load_predictor_refuses_anything_else(case: str, tmp_path: Path) -> None:
    target = tmp_path / case
    if case == "two":
        for name in ("a.onnx", "b.onnx"):
            tiny_onnx(target / name, W, class_names=CLASSES, preprocess=PRE)
    elif case == "none":
        target.mkdir()
    elif case == "other_file":
        target = _png(tmp_path / "x.png", (0, 0, 0))
    what = r"a readable ONNX file \(.+\)" if case == "other_file" else r"an \.onnx file"
    message = (
        rf"^{target} is neither {what} nor a model bundle folder \(with card\.json\); "
        r"point at the output of a model_<name> or onnx_<name> asset$"
    )
    with pytest.raises(CheckpointError, match=message):
        load_predictor(target)


# --- listing image files ----------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in [
        "b.jpg",
        "A.PNG",
        "notes.txt",
        "z/c.webp",
        "z/deeper/d.png",
        ".h.png",
        ".hid/e.png",
    ]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return tmp_path


def test_iter_image_files_sorted_recursive_hidden_skipped(tree: Path) -> None:
    got = [p.relative_to(tree).as_posix() for p in iter_image_files(tree)]
    assert got == ["A.PNG", "b.jpg", "z/c.webp", "z/deeper/d.png"]
    flat = [p.relative_to(tree).as_posix() for p in iter_image_files(str(tree), recursive=False)]
    assert flat == ["A.PNG", "b.jpg"]
    nested = [p.name for p in iter_image_files(tree / "z", recursive=True)]
    assert nested == ["c.webp", "d.png"]


def test_iter_image_files_named_files_whatever_their_extension(tree: Path) -> None:
    assert list(iter_image_files(tree / "notes.txt")) == [tree / "notes.txt"]
    assert list(iter_image_files(os.fspath(tree / "b.jpg"))) == [tree / "b.jpg"]
    got = list(iter_image_files([tree / "notes.txt", str(tree / "z")]))
    assert got == [tree / "notes.txt", tree / "z" / "c.webp", tree / "z" / "deeper" / "d.png"]
    assert all(isinstance(p, Path) for p in got)


def test_iter_image_files_missing_path_is_named(tree: Path) -> None:
    missing = tree / "nope"
    message = rf"^{missing} does not exist: pass an image file or a folder of images$"
    with pytest.raises(DataSourceError, match=message):
        list(iter_image_files([tree / "b.jpg", missing]))


def test_iter_image_files_skips_symlinked_folders_and_entries_it_cannot_stat(
    tmp_path: Path,
) -> None:
    for rel in ["a.png", "c.png", "real/d.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "b_loop.png").symlink_to("b_loop.png")  # is_file() raises ELOOP: passed over
    (tmp_path / "link.png").symlink_to(tmp_path / "a.png")  # a symlinked file is kept
    (tmp_path / "up").symlink_to(".")  # a symlinked folder is not entered (it would loop)
    got = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert got == ["a.png", "c.png", "link.png", "real/d.png"]


# --- int8 exports (issue #14): the serving rule's last line of defence ---------------------------


def _int8_record(passed: bool | None, *, ratio: float = 0.5) -> dict:
    gate = None if passed is None else {"passed": passed, "description": "agreement 99.5%"}
    return {"gate": gate, "latency": {"by_batch": {"1": {"int8_over_fp32": ratio}}}}


def _export_folder(folder: Path, *, int8_passed: bool | None = True, fp32: bool = True) -> Path:
    """An onnx_<name>-like folder: `model.onnx` (fp32) and `model_int8.onnx`, whose record
    names the fp32 graph it was made from (as `quantize_onnx` writes it)."""
    import onnx

    from food_assets.ml.export.metadata import K_GRAPH_SHA

    record = _int8_record(int8_passed)
    if fp32:
        f = tiny_onnx(folder / "model.onnx", W, class_names=CLASSES, preprocess=PRE, model_name="f")
        props = {p.key: p.value for p in onnx.load(str(f)).metadata_props}
        record["source_graph_sha256"] = props[K_GRAPH_SHA]
    tiny_onnx(folder / "model_int8.onnx", W * 2, class_names=CLASSES, preprocess=PRE,
              model_name="q", precision="int8", int8=record)  # fmt: skip
    return folder


def test_an_int8_file_is_served_only_with_a_passed_gate(tmp_path: Path) -> None:
    """Breakage caught: `OnnxPredictor` serving an int8 file that failed or never had its gate
    when named directly, the check skipped for int8, its message losing the reason or the fix."""
    folder = _export_folder(tmp_path / "ok", int8_passed=True)
    p = OnnxPredictor(folder / "model_int8.onnx", threads=1)
    assert (p.precision, p.choice.precision, p.model_name) == ("int8", "int8", "q")
    assert p.choice.path == folder / "model_int8.onnx" and p.choice.reason == "int8 file given"
    assert p._session.get_session_options().intra_op_num_threads == 1
    fp32 = OnnxPredictor(folder / "model.onnx")
    assert (fp32.precision, fp32.choice.reason) == ("fp32", "fp32 file given")
    for passed, why in ((False, "it failed its accuracy gate"), (None, "it was never gated")):
        bad = _export_folder(tmp_path / f"bad_{passed}", int8_passed=passed)
        with pytest.raises(ConfigError) as err:
            OnnxPredictor(bad / "model_int8.onnx")
        msg = str(err.value)
        assert msg.startswith(f"{bad / 'model_int8.onnx'} is an int8 export that cannot be")
        assert why in msg and msg.endswith(
            ". Serve the fp32 export beside it (--precision fp32), or re-materialize onnx_<name>"
        )


def test_load_predictor_passes_the_precision_to_the_serving_rule(tmp_path: Path) -> None:
    """Breakage caught: `precision` not reaching `choose_export` (auto always, or fp32 always),
    the chosen file not the one loaded, the choice not attached to the predictor."""
    folder = _export_folder(tmp_path / "e", int8_passed=True)
    expected = {"auto": ("int8", "q"), "int8": ("int8", "q"), "fp32": ("fp32", "f")}
    for precision, (chosen, name) in expected.items():
        p = load_predictor(folder, precision=precision)
        assert (p.choice.precision, p.precision, p.model_name) == (chosen, chosen, name)
        assert p.choice.path.name == ("model_int8.onnx" if chosen == "int8" else "model.onnx")
        assert load_predictor(folder / "model.onnx", precision=precision).model_name == name
    with pytest.raises(ConfigError, match="must be one of auto, fp32, bf16, int8"):
        load_predictor(folder, precision="fp16")


def test_export_folders_are_recognised_with_their_int8_twin(tmp_path: Path, bundle) -> None:
    """Breakage caught: a folder holding `model.onnx` and `model_int8.onnx` (or the int8 file
    alone) not taken for an export folder, two fp32 or two int8 files taken for one, a bundle
    folder (card.json) taken for one, hidden files counted."""
    both = _export_folder(tmp_path / "both")
    assert load_predictor(both, precision="fp32").model_name == "f"
    alone = _export_folder(tmp_path / "alone", fp32=False)
    assert load_predictor(alone).model_name == "q"
    assert auto_label(alone) == "int8 (0.50x)"
    failed_alone = _export_folder(tmp_path / "failed_alone", fp32=False, int8_passed=False)
    assert auto_label(failed_alone) == "nothing (int8 failed its gate)"
    (alone / ".model_int8.onnx").write_bytes(b"a hidden temporary")
    (alone / ".other.onnx").write_bytes(b"another")
    assert load_predictor(alone, precision="int8").model_name == "q"
    two_int8 = _export_folder(tmp_path / "two_int8", fp32=False)
    tiny_onnx(two_int8 / "other_int8.onnx", W, class_names=CLASSES, preprocess=PRE,
              precision="int8", int8=_int8_record(True))  # fmt: skip
    two_fp32 = _export_folder(tmp_path / "two_fp32")
    tiny_onnx(two_fp32 / "other.onnx", W, class_names=CLASSES, preprocess=PRE)
    for folder in (two_int8, two_fp32):
        with pytest.raises(CheckpointError, match="neither an .onnx file nor a model bundle"):
            load_predictor(folder)
    with pytest.raises(ConfigError) as err:  # a bundle is fp32 PyTorch: no int8 from it
        load_predictor(bundle[0], precision="int8")
    assert str(err.value) == (
        f"{bundle[0]} is a PyTorch bundle (fp32); int8 needs its ONNX export: materialize "
        "onnx_<name> and point at it, or use --precision auto"
    )
    assert isinstance(load_predictor(bundle[0], precision="fp32"), TorchPredictor)
    bundle_with_onnx = bundle[0]
    tiny_onnx(bundle_with_onnx / "stray.onnx", W, class_names=CLASSES, preprocess=PRE)
    assert isinstance(load_predictor(bundle_with_onnx), TorchPredictor)


def test_a_bundle_refuses_bf16_and_openvino_with_what_to_do(bundle) -> None:
    """Breakage caught: bf16 or `--backend openvino` silently served by PyTorch fp32 from a
    bundle, or the refusal naming the wrong thing (`auto` for OpenVINO)."""
    for precision, backend, what in (("bf16", "auto", "bf16"), ("auto", "openvino", "OpenVINO"),
                                     ("int8", "openvino", "int8")):  # fmt: skip
        with pytest.raises(ConfigError) as err:
            load_predictor(bundle[0], precision=precision, backend=backend)
        assert str(err.value) == (
            f"{bundle[0]} is a PyTorch bundle (fp32); {what} needs its ONNX export: materialize "
            "onnx_<name> and point at it, or use --precision auto"
        )
