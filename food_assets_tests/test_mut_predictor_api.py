"""The predictor's public calls the server, the batch asset and notebooks use (`predict`,
`top_k`, `predict_array`, `tensor_from_bytes`), `food-assets models`' variants table
(`describe_variants`) and OpenVINO's last line of defence (`_check_openvino_gate`), on models
whose answers are worked out by hand (`make mutation` runs these).

The models and images are test_mut_predictor.py's: logits = channel means @ W on solid-colour
PNGs, where a channel value v becomes 4 v / 255 - 2 exactly.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from food_assets.ml.data.images import ImageDecodeError
from food_assets.ml.errors import ConfigError
from food_assets.ml.export.metadata import K_GRAPH_SHA
from food_assets.ml.export.variants import stamp_variants
from food_assets.ml.inference.predictor import OnnxPredictor
from food_assets.ml.inference.serving import (
    auto_label,
    choose_export,
    describe_variants,
    latency_summary,
)
from food_assets_tests.test_mut_predictor import (
    CLASSES,
    MeanPredictor,
    _export_folder,
    _norm,
    _png,
    _softmax,
)

W3 = np.eye(3)


def _want(colour: tuple[int, int, int], weights: np.ndarray = W3) -> list[float]:
    means = np.array([_norm(v) for v in colour])
    return _softmax(list(means @ weights))


def _top(colour: tuple[int, int, int], k: int) -> list[tuple[str, float]]:
    p = _want(colour)
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))[:k]
    return [(CLASSES[i], p[i]) for i in order]


def _assert_top(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [name for name, _ in got] == [name for name, _ in want]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], rtol=1e-5)


# --- predict: files and PIL images, in input order ---------------------------------------------


def test_predict_mixes_files_and_images_in_input_order(tmp_path: Path) -> None:
    """Breakage caught: results out of input order, an image given a file's path (or the
    wrong `<image i>` index), a bad file stopping the others, `top_k` not reaching files or
    images, the images' ranking reversed."""
    red = _png(tmp_path / "red.png", (255, 0, 51))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    blue = Image.new("RGB", (16, 16), (0, 51, 255))
    green = Image.new("RGB", (16, 16), (0, 255, 102))
    p = MeanPredictor(W3)
    out = p.predict([red, blue, str(bad), green], top_k=2)
    assert [r.path for r in out] == [str(red), "<image 1>", str(bad), "<image 3>"]
    _assert_top(out[0].top_k, _top((255, 0, 51), 2))
    _assert_top(out[1].top_k, _top((0, 51, 255), 2))
    assert out[2].top_k == [] and out[2].error is not None and not out[2].ok
    _assert_top(out[3].top_k, _top((0, 255, 102), 2))
    assert out[1].label == "sushi" and out[3].label == "pizza"


@pytest.mark.parametrize("kind", ["str", "path", "image"])
def test_predict_takes_one_file_or_one_image_alone(tmp_path: Path, kind: str) -> None:
    """Breakage caught: a lone `str` iterated character by character, a lone `Path` or PIL
    image not taken for one item (a TypeError, or one result per pixel row)."""
    red = _png(tmp_path / "red.png", (255, 0, 51))
    item = {"str": str(red), "path": red, "image": Image.open(red).convert("RGB")}[kind]
    out = MeanPredictor(W3).predict(item)
    assert len(out) == 1
    assert out[0].path == ("<image 0>" if kind == "image" else str(red))
    _assert_top(out[0].top_k, _top((255, 0, 51), 3))


def test_predict_k_defaults_to_5_clamped_and_batches_files(tmp_path: Path) -> None:
    """Breakage caught: the default k not 5 (capped at the 3 classes), k = 0 giving nothing,
    `batch_size` not reaching the file path (one batch of 5 instead of 2 + 2 + 1), images
    batched with the files."""
    files = [_png(tmp_path / f"{i}.png", (51 * i, 0, 0)) for i in range(5)]
    p = MeanPredictor(W3)
    out = p.predict(files, batch_size=2)
    assert p.batches == [2, 2, 1]
    assert all(len(r.top_k) == 3 for r in out)
    assert [len(r.top_k) for r in p.predict(files[:1], top_k=0)] == [1]
    p.batches.clear()
    images = [Image.new("RGB", (16, 16), (0, 0, 51 * i)) for i in range(3)]
    assert len(p.predict([*images, files[0]], batch_size=1)) == 4
    assert p.batches == [3, 1]  # the three images together, then the file (read lazily)


# --- top_k -----------------------------------------------------------------------------------


def test_top_k_best_first_ties_by_class_order_and_clamped() -> None:
    """Breakage caught: worst first, a tie broken by anything but class order (an unstable
    sort), k < 1 giving nothing, numpy floats leaking out, k above the class count failing."""
    p = MeanPredictor(W3)
    probs = np.array([0.25, 0.5, 0.25], dtype=np.float32)
    assert p.top_k(probs, 2) == [("pizza", 0.5), ("apple_pie", 0.25)]
    assert p.top_k(probs, 3) == [("pizza", 0.5), ("apple_pie", 0.25), ("sushi", 0.25)]
    assert p.top_k(probs, 9) == p.top_k(probs, 3)
    assert p.top_k(probs, 0) == [("pizza", 0.5)] == p.top_k(probs, -2)
    assert p.top_k(np.array([0.1, 0.2, 0.7]), 1) == [("sushi", 0.7)]
    assert all(type(v) is float for _, v in p.top_k(probs, 3))


# --- predict_array ---------------------------------------------------------------------------


def test_predict_array_checks_the_shape_and_matches_predict_tensor() -> None:
    """Breakage caught: a batch of the wrong rank, channel count, height or width let through
    (or a right one refused), float64 input not converted, a result other than the tensor
    path's."""
    p = MeanPredictor(W3, temperature=2.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 16, 16))
    got = p.predict_array(x)  # float64 in: converted
    want = p.predict_tensor(torch.from_numpy(x.astype(np.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(p.predict_array(x[:, :, ::-1, :]), want, rtol=1e-6)  # strided
    for shape in [(3, 16, 16), (1, 1, 16, 16), (1, 3, 15, 16), (1, 3, 16, 15), (1, 4, 16, 16)]:
        with pytest.raises(ConfigError) as err:
            p.predict_array(np.zeros(shape, dtype=np.float32))
        assert str(err.value) == (f"predict_array takes a (N, 3, 16, 16) batch, not {shape}")


# --- tensor_from_bytes -----------------------------------------------------------------------


def test_tensor_from_bytes_is_the_file_path_s_tensor_and_bad_bytes_are_named(
    tmp_path: Path,
) -> None:
    """Breakage caught: an upload preprocessed differently from the same file on disk, bad
    bytes raising something other than `ImageDecodeError`, the upload's name or the pixel
    limit not passed on."""
    red = _png(tmp_path / "red.png", (255, 0, 51))
    p = MeanPredictor(W3)
    from_bytes = p.tensor_from_bytes(red.read_bytes())
    torch.testing.assert_close(from_bytes, p._pipeline(str(red)))
    with pytest.raises(ImageDecodeError) as err:
        p.tensor_from_bytes(b"\x89PNG garbage", name="upload.png")
    assert err.value.path == "upload.png"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
    assert p.tensor_from_bytes(buf.getvalue(), max_pixels=64 * 64).shape == (3, 16, 16)
    with pytest.raises(ImageDecodeError):
        p.tensor_from_bytes(buf.getvalue(), max_pixels=64 * 64 - 1)


# --- describe_variants and OpenVINO's gate ----------------------------------------------------


def _sha(path: Path) -> str:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}[K_GRAPH_SHA]


def _with_variants(folder: Path, *, ov_int8_passed: bool = False) -> Path:
    """An export folder whose fp32 file carries a variants record: OpenVINO fp32 passed (the
    fastest that passed), bf16 not offered, int8 failed or passed (and then fastest)."""
    _export_folder(folder)
    fp32, int8 = folder / "model.onnx", folder / "model_int8.onnx"

    def gate(passed: bool) -> dict:
        return {"passed": passed, "description": "agreement 99.7%"}

    stamp_variants(fp32, {
        "gates": {
            "openvino/fp32": {"offered": True, "gate": gate(True), "graph_sha256": _sha(fp32)},
            "openvino/bf16": {"offered": False, "why": "no native bf16 on this CPU"},
            "openvino/int8": {
                "offered": True, "gate": gate(ov_int8_passed), "graph_sha256": _sha(int8)
            },
        },
        "latency_ms": {
            "onnxruntime/fp32": {"1": 2.0, "32": 40.0},
            "onnxruntime/int8": {"1": 1.5, "32": 30.0},
            "openvino/fp32": {"1": 1.0, "32": 20.0},
            "openvino/int8": {"1": 0.5},
        },
    })  # fmt: skip
    return folder


def test_describe_variants_one_row_each_with_verdict_latency_and_auto(tmp_path: Path) -> None:
    """Breakage caught: a variant left out or out of order, a verdict or latency from another
    variant, batch 1 and 32 swapped, `auto` marking something other than the fastest that
    passed (or two rows), a failed variant marked although it is the fastest."""
    rows = describe_variants(_with_variants(tmp_path / "e"))
    assert rows == [
        {"variant": "onnxruntime/fp32", "verdict": "reference", "ms_b1": 2.0, "ms_b32": 40.0,
         "auto": False},
        {"variant": "onnxruntime/int8", "verdict": "passed", "ms_b1": 1.5, "ms_b32": 30.0,
         "auto": False},
        {"variant": "openvino/fp32", "verdict": "passed", "ms_b1": 1.0, "ms_b32": 20.0,
         "auto": True},
        {"variant": "openvino/bf16", "verdict": "not offered", "ms_b1": None, "ms_b32": None,
         "auto": False},
        {"variant": "openvino/int8", "verdict": "failed its gate", "ms_b1": 0.5, "ms_b32": None,
         "auto": False},
    ]  # fmt: skip
    passed = describe_variants(_with_variants(tmp_path / "p", ov_int8_passed=True))
    assert [r["variant"] for r in passed if r["auto"]] == ["openvino/int8"]


def test_describe_variants_without_a_record_or_a_servable_file(tmp_path: Path) -> None:
    """Breakage caught: an export from before the variants record showing its relative
    ratios as milliseconds, a variant without a file given a verdict other than `none`, a
    folder with nothing servable marking (or failing on) `auto`."""
    rows = describe_variants(_export_folder(tmp_path / "legacy"))
    assert [r["variant"] for r in rows if r["auto"]] == ["onnxruntime/int8"]
    assert all(r["ms_b1"] is None and r["ms_b32"] is None for r in rows)
    lone = describe_variants(_export_folder(tmp_path / "lone", fp32=False, int8_passed=False))
    assert [r["variant"] for r in lone][0] == "onnxruntime/int8"  # no fp32: no reference row
    assert {r["variant"]: r["verdict"] for r in lone}["openvino/fp32"] == "none"
    assert not any(r["auto"] for r in lone)


def test_openvino_serves_only_a_variant_that_passed_its_gate_on_this_file(
    tmp_path: Path,
) -> None:
    """Breakage caught: `OnnxPredictor(backend="openvino")` serving a variant that failed, was
    not offered or was never gated, the int8 file's gate looked up on the int8 file instead of
    its fp32 twin's record, a stale gate (another graph) accepted, the reason lost."""
    folder = _with_variants(tmp_path / "e", ov_int8_passed=False)
    fp32, int8 = folder / "model.onnx", folder / "model_int8.onnx"
    served = OnnxPredictor(fp32, backend="openvino", precision="fp32", threads=1)
    assert (served.backend, served.precision) == ("openvino", "fp32")
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    reference = OnnxPredictor(fp32, threads=1)
    np.testing.assert_allclose(served.predict_array(x), reference.predict_array(x), atol=1e-5)
    cases = [
        (fp32, "bf16", "cannot be served by OpenVINO at bf16: it was not offered at export"),
        (int8, "int8", "cannot be served by OpenVINO at int8: it failed its accuracy gate"),
    ]
    for path, precision, why in cases:
        with pytest.raises(ConfigError) as err:
            OnnxPredictor(path, backend="openvino", precision=precision)
        assert str(err.value).startswith(f"{path} {why}")
        assert str(err.value).endswith("Use --backend onnxruntime, or re-materialize onnx_<name>")
    passed = _with_variants(tmp_path / "p", ov_int8_passed=True)
    ok = OnnxPredictor(passed / "model_int8.onnx", backend="openvino", precision="int8")
    assert (ok.backend, ok.precision) == ("openvino", "int8")
    # The same fp32 file without its record (a copy stamped before OpenVINO): never gated.
    bare = tmp_path / "bare"
    _export_folder(bare)
    with pytest.raises(ConfigError, match="it was never gated"):
        OnnxPredictor(bare / "model.onnx", backend="openvino", precision="fp32")
    # A gate recorded for another graph than the one here is stale.
    stale = tmp_path / "stale"
    shutil.copytree(folder, stale)
    variants = json.loads((stale / "variants.json").read_text())  # the record, as stamped
    variants["gates"]["openvino/fp32"]["graph_sha256"] = _sha(stale / "model.onnx")[::-1]
    stamp_variants(stale / "model.onnx", variants)
    with pytest.raises(ConfigError, match=r"gated on another file than the one here \(stale\)"):
        OnnxPredictor(stale / "model.onnx", backend="openvino", precision="fp32")


def test_auto_label_names_the_served_variant_and_its_latency(tmp_path: Path) -> None:
    """Breakage caught: `food-assets models`' `auto serves` cell naming a variant other than
    the rule's choice (a failed fastest one, or a narrowed rule), the batch-1 latency missing
    or taken at another batch size."""
    assert auto_label(_with_variants(tmp_path / "e")) == "openvino/fp32 (1 ms)"
    passed = _with_variants(tmp_path / "p", ov_int8_passed=True)
    assert auto_label(passed) == "openvino/int8 (0.5 ms)"


# --- the leaderboard's latency columns with OpenVINO ------------------------------------------


def _latency_rows(ms: dict[str, float]) -> list[dict]:
    return [
        {"backend": backend, "batch": batch, "median_ms": b1 * (20 if batch == 32 else 1),
         "threads": 2}
        for backend, b1 in ms.items()
        for batch in (1, 32)
    ]  # fmt: skip


def _gates(**passed: bool) -> dict:
    return {
        "gates": {
            f"openvino/{p}": {"offered": True, "gate": {"passed": ok, "description": "d"}}
            for p, ok in passed.items()
        }
    }


def test_latency_summary_serves_the_fastest_gated_openvino_variant() -> None:
    """Breakage caught: an OpenVINO variant served without (or against) its gate, the gates
    read under another key, `serving` not `openvino/<precision>` for OpenVINO, the served
    latency taken from another variant, the OpenVINO columns swapped."""
    ms = {"eager": 40.0, "onnxruntime": 10.0, "onnxruntime_int8": 6.0}
    rows = _latency_rows({**ms, "openvino_fp32": 5.0, "openvino_bf16": 3.0, "openvino_int8": 2.0})
    int8_ok = {"gate": {"passed": True, "description": "ok"}}
    got = latency_summary(rows, int8_ok, _gates(fp32=True, bf16=True, int8=False))
    assert (got["serving"], got["latency_ms"]) == ("openvino/bf16", 3.0)
    assert (got["ov_fp32_ms_b1"], got["ov_bf16_ms_b32"], got["ov_int8_ms_b1"]) == (5.0, 60.0, 2.0)
    assert latency_summary(rows, int8_ok, _gates(fp32=True))["serving"] == "openvino/fp32"
    assert latency_summary(rows, int8_ok, None)["serving"] == "int8"  # no record: ORT only
    assert latency_summary(rows, None, None)["serving"] == "fp32"  # no int8 record
    everything = latency_summary(rows, int8_ok, _gates(fp32=True, bf16=True, int8=True))
    assert (everything["serving"], everything["latency_ms"]) == ("openvino/int8", 2.0)


def test_latency_summary_ranks_an_untimed_int8_by_its_ratio_but_shows_no_derived_figure():
    """An int8 file not timed in this run (an export from before the per-variant timing) is
    ranked by its record's ratio to fp32, and the leaderboard's latency is then eager's, never
    a figure derived from the ratio. Breakage caught: the ratio ignored (fp32 served), divided
    instead of multiplied (int8 ranked slower), or the derived figure shown."""
    rows = _latency_rows({"eager": 40.0, "onnxruntime": 10.0})
    fast = {"gate": {"passed": True}, "latency": {"by_batch": {"1": {"int8_over_fp32": 0.5}}}}
    got = latency_summary(rows, fast, None)
    assert (got["serving"], got["latency_ms"]) == ("int8", 40.0)
    slow = {**fast, "latency": {"by_batch": {"1": {"int8_over_fp32": 1.5}}}}
    assert latency_summary(rows, slow, None)["serving"] == "fp32"
    # 10 x 1.05 = 10.5 ms: slower than fp32's 10, but 10 / 1.05 would rank it faster
    slower = {**fast, "latency": {"by_batch": {"1": {"int8_over_fp32": 1.05}}}}
    assert latency_summary(rows, slower, None)["serving"] == "fp32"


# --- what the mutation run found unchecked ----------------------------------------------------


def test_onnx_predictor_refuses_what_its_backend_cannot_run(tmp_path: Path) -> None:
    """Breakage caught: bf16 handed to ONNX Runtime (it has no bf16), backend `auto` taken as a
    runtime, the refusal's words lost, the choice not naming the backend that runs it, an
    OpenVINO predictor keeping an ONNX Runtime session, OpenVINO's thread count or static
    batch shapes (1 and 32, the sizes timed at export) not passed on."""
    folder = _with_variants(tmp_path / "e")
    fp32 = folder / "model.onnx"
    with pytest.raises(ConfigError) as err:
        OnnxPredictor(fp32, backend="onnxruntime", precision="bf16")
    assert str(err.value) == "ONNX Runtime serves fp32 and int8 here; bf16 is OpenVINO's"
    with pytest.raises(ConfigError) as err:
        OnnxPredictor(fp32, backend="auto")
    assert str(err.value) == (
        f"{fp32} is a fp32 file: it cannot run as auto fp32; use load_predictor(folder, "
        "precision=..., backend=...)"
    )
    assert OnnxPredictor(fp32).choice.backend == "onnxruntime"
    ov = OnnxPredictor(fp32, backend="openvino", precision="fp32", threads=1)
    assert ov.choice.backend == "openvino" and ov._session is None
    assert (ov._run.threads, ov._run.static) == (1, (1, 32))


def test_openvino_finds_the_fp32_twin_of_any_int8_file_name(tmp_path: Path) -> None:
    """The int8 file's OpenVINO gate is in its fp32 twin's record, found by the name the
    exporter gives (`<stem>_int8.onnx`). Breakage caught: the twin's name cut at the wrong
    end (`model_int8` hides it: both ends give `model`), an fp32 file whose name merely ends
    in `_int8` looked up as a twin."""
    folder = _with_variants(tmp_path / "e", ov_int8_passed=True)
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    shutil.copy(folder / "model.onnx", renamed / "classifier.onnx")
    shutil.copy(folder / "model_int8.onnx", renamed / "classifier_int8.onnx")
    p = OnnxPredictor(renamed / "classifier_int8.onnx", backend="openvino", precision="int8")
    assert (p.backend, p.precision) == ("openvino", "int8")
    odd = tmp_path / "odd"
    odd.mkdir()
    shutil.copy(folder / "model.onnx", odd / "fp32_int8.onnx")  # an fp32 file, odd name
    _export_folder(tmp_path / "bare")  # beside it, an fp32 file without a variants record
    shutil.copy(tmp_path / "bare" / "model.onnx", odd / "fp32.onnx")
    assert OnnxPredictor(odd / "fp32_int8.onnx", backend="openvino", precision="fp32").backend


def test_predict_defaults_k_5_and_batches_of_32(tmp_path: Path) -> None:
    """Breakage caught: the default k not 5 (seen with 7 classes), the default batch not 32
    (33 files: 32 then 1)."""
    seven = tuple(f"c{i}" for i in range(7))
    p = MeanPredictor(np.eye(3, 7), classes=seven)
    files = [_png(tmp_path / f"{i}.png", (i, 0, 0)) for i in range(33)]
    out = p.predict(files)
    assert p.batches == [32, 1] and {len(r.top_k) for r in out} == {5}


def test_predict_array_hands_the_model_float32(tmp_path: Path) -> None:
    """Breakage caught: a float64 batch passed on as float64 (a float32 model then fails)."""
    dtypes = []

    class Recording(MeanPredictor):
        def _logits(self, batch):
            dtypes.append(batch.dtype)
            return super()._logits(batch)

    Recording(W3).predict_array(np.zeros((1, 3, 16, 16), dtype=np.float64))
    assert dtypes == [torch.float32]


def test_an_upload_decodes_as_its_file_does_also_for_a_large_jpeg(tmp_path: Path) -> None:
    """A JPEG larger than the model's input is decoded at reduced scale (PIL's draft), on disk
    and as an upload alike. Breakage caught: the upload decoded in full (other pixels than the
    same file gives), the default upload name not `<upload>`."""
    rng = np.random.default_rng(0)
    path = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 255, (384, 512, 3), dtype=np.uint8)).save(path, quality=90)
    p = MeanPredictor(W3)
    torch.testing.assert_close(p.tensor_from_bytes(path.read_bytes()), p._pipeline(str(path)))
    with pytest.raises(ImageDecodeError) as err:
        p.tensor_from_bytes(b"not an image")
    assert err.value.path == "<upload>"


def test_auto_label_without_a_timing_for_the_served_variant(tmp_path: Path) -> None:
    """Breakage caught: a variant served without a batch-1 timing formatted as `None ms` (a
    crash)."""
    folder = _with_variants(tmp_path / "e")
    record = json.loads((folder / "variants.json").read_text())
    del record["latency_ms"]["openvino/fp32"]["1"]
    record["latency_ms"]["onnxruntime/int8"] = {"32": 30.0}
    record["latency_ms"]["onnxruntime/fp32"] = {"32": 40.0}
    stamp_variants(folder / "model.onnx", record)
    assert auto_label(folder) == "onnxruntime/fp32"


def test_latency_summary_prefers_a_measured_int8_latency_to_its_ratio() -> None:
    """Breakage caught: an int8 timed in this run ranked by its record's ratio instead (0.5 x
    10 ms would serve it; measured at 12 ms it is slower than fp32)."""
    rows = _latency_rows({"eager": 40.0, "onnxruntime": 10.0, "onnxruntime_int8": 12.0})
    fast = {"gate": {"passed": True}, "latency": {"by_batch": {"1": {"int8_over_fp32": 0.5}}}}
    assert latency_summary(rows, fast, None)["serving"] == "fp32"


def test_choose_export_names_the_backend_and_a_missing_twin_is_never_gated(tmp_path: Path):
    """Breakage caught: the choice losing its backend (OpenVINO's variant then run by ONNX
    Runtime), an int8 file whose fp32 twin is missing looked up through the missing file
    instead of refused as never gated."""
    folder = _with_variants(tmp_path / "e")
    assert (choose_export(folder).backend, choose_export(folder).path) == (
        "openvino",
        folder / "model.onnx",
    )
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(folder / "model_int8.onnx", alone / "model_int8.onnx")
    with pytest.raises(ConfigError, match="it was never gated"):
        OnnxPredictor(alone / "model_int8.onnx", backend="openvino", precision="int8")


def test_load_predictor_passes_the_backend_on_and_names_a_bad_one(tmp_path: Path) -> None:
    """Breakage caught: `backend` not reaching the serving rule (auto's OpenVINO served when
    ONNX Runtime was asked), the bad-backend message losing its choices or its hint."""
    from food_assets.ml.inference.predictor import load_predictor
    from food_assets.ml.inference.serving import check_backend

    folder = _with_variants(tmp_path / "e")
    assert load_predictor(folder).choice.backend == "openvino"
    ort = load_predictor(folder, backend="onnxruntime")
    assert (ort.choice.backend, ort.choice.precision) == ("onnxruntime", "int8")
    with pytest.raises(ConfigError) as err:
        check_backend("tensorrt")
    assert str(err.value) == (
        "backend must be one of auto, onnxruntime, openvino, not 'tensorrt' (auto: the fastest "
        "that passed its gates; onnxruntime: the portable one)"
    )
