"""OpenVINO's runtime settings on a hand-built ONNX classifier (milliseconds to compile): the
hints are set explicitly, a model is compiled once per process, and the disk cache goes where
it is told (never the working directory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import ConfigError
from food_assets.ml.export import openvino_runtime as ovr
from food_assets.ml.export.onnx_export import create_session
from food_assets_tests.tiny_onnx import tiny_onnx

W = np.array([[1.0, 0.0, -1.0], [0.0, 2.0, 0.5], [-0.5, 0.0, 1.0]], dtype=np.float32)
PRE = Preprocess(input_size=8)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_onnx(tmp_path / "m.onnx", W, class_names=("a", "b", "c"), preprocess=PRE)


def test_hints_are_explicit_and_the_answers_match_onnx_runtime(model, monkeypatch) -> None:
    """Breakage caught: fp32 compiled at OpenVINO's default (bf16 on AMX), threads or the
    latency hint left to OpenVINO, or a runner that returns another batch's logits."""
    monkeypatch.setattr(ovr, "_COMPILED", {})
    compiled = ovr.compile_openvino(model, "fp32", threads=1)
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    assert "LATENCY" in str(compiled.get_property("PERFORMANCE_HINT"))
    x = np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype(np.float32)
    ref = create_session(model).run(None, {"input": x})[0]
    runner = ovr.OpenVinoRunner(model, "fp32", threads=1, static=(1, 5))
    assert np.allclose(runner(x), ref, atol=1e-5)  # static batch 5
    assert np.allclose(runner(x[:3]), ref[:3], atol=1e-5)  # dynamic batch
    assert np.allclose(runner(x[2:3]), ref[2:3], atol=1e-5)  # static batch 1
    with pytest.raises(ConfigError, match="precision must be one of"):
        ovr.compile_openvino(model, "fp16")


def test_a_model_is_compiled_once_per_process(model, monkeypatch) -> None:
    """Breakage caught: every predictor compiling again (seconds for a ResNet-50), or a changed
    file served from the stale compiled model."""
    monkeypatch.setattr(ovr, "_COMPILED", {})
    a = ovr.compile_openvino(model, "fp32", threads=1)
    assert ovr.compile_openvino(model, "fp32", threads=1) is a
    assert ovr.compile_openvino(model, "fp32", threads=2) is not a  # other settings, other key
    tiny_onnx(model, W * 2, class_names=("a", "b", "c"), preprocess=PRE)  # rewritten file
    assert ovr.compile_openvino(model, "fp32", threads=1) is not a


def test_the_disk_cache_goes_where_it_is_told(model, tmp_path, monkeypatch) -> None:
    """Breakage caught: an empty FOOD_ASSETS_OPENVINO_CACHE read as the working directory
    (cache blobs dropped into the repository), or the cache not used when set."""
    monkeypatch.setattr(ovr, "_COMPILED", {})
    monkeypatch.setenv("FOOD_ASSETS_OPENVINO_CACHE", "")
    assert ovr.cache_dir() is None
    monkeypatch.delenv("FOOD_ASSETS_OPENVINO_CACHE")
    assert ovr.cache_dir() == ovr.DEFAULT_CACHE
    cache = tmp_path / "cache"
    monkeypatch.setenv("FOOD_ASSETS_OPENVINO_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    ovr.compile_openvino(model, "fp32", threads=1)
    assert any(cache.glob("*.blob")) and not any(tmp_path.glob("*.blob"))
