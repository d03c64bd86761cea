"""The parity side of the ONNX export: sessions, batched runs, the parity report.

Models are hand-built (`food_assets_tests.tiny_onnx`), so each test takes milliseconds and every
expected logit is a channel mean times a weight. `make mutation` runs these once per mutant.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pytest
import torch

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import CheckpointError
from food_assets.ml.export import onnx_export as E
from food_assets.ml.export.onnx_export import (
    ParityReport,
    check_parity,
    create_session,
    default_threads,
    run_session,
)
from food_assets_tests.tiny_onnx import MeanLinear, tiny_onnx

PRE = Preprocess(input_size=8)
W = np.array([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0], [0.5, 0.0, 1.0]], dtype=np.float32)
NAMES = ("a", "b", "c")


@pytest.fixture
def model_file(tmp_path):
    return tiny_onnx(tmp_path / "m.onnx", W, class_names=NAMES, preprocess=PRE)


# --- threads and sessions ---------------------------------------------------------------------


def test_default_threads_is_the_affinity_mask(monkeypatch) -> None:
    assert default_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert default_threads() == 1


def test_default_threads_without_affinity_falls_back_to_the_cpu_count(monkeypatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert default_threads() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_threads() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert default_threads() == 1


def test_create_session_options(model_file, monkeypatch) -> None:
    monkeypatch.setattr(E, "default_threads", lambda: 3)
    for src in (model_file, str(model_file), model_file.read_bytes()):
        session = create_session(src)
        opts = session.get_session_options()
        assert opts.intra_op_num_threads == 3
        assert opts.inter_op_num_threads == 1
        assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
        assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        assert opts.log_severity_level == 3
        assert session.get_providers() == ["CPUExecutionProvider"]
    session = create_session(model_file, threads=2, providers=["CPUExecutionProvider"])
    assert session.get_session_options().intra_op_num_threads == 2
    if "AzureExecutionProvider" in ort.get_available_providers():  # a second provider to ask for
        both = ["AzureExecutionProvider", "CPUExecutionProvider"]
        assert create_session(model_file, providers=both).get_providers() == both


def test_create_session_errors_name_the_file_or_the_bytes(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match=rf"^ONNX Runtime cannot load {bad} \(.+\)$"):
        create_session(bad)
    with pytest.raises(CheckpointError, match=r"^ONNX Runtime cannot load the ONNX model \(.+\)$"):
        create_session(b"not a model")


# --- batched runs -----------------------------------------------------------------------------


class RecordingSession:
    """Duck-typed ORT session: logits = channel means @ W, and a log of batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.dtypes: list[np.dtype] = []

    def get_inputs(self):
        return [type("Input", (), {"name": "pixels"})()]

    def run(self, outputs, feeds):
        assert outputs is None and list(feeds) == ["pixels"]
        x = feeds["pixels"]
        assert x.flags["C_CONTIGUOUS"]
        self.batches.append(len(x))
        self.dtypes.append(x.dtype)
        return [x.mean(axis=(2, 3)) @ W]


def test_run_session_batches_in_order_and_feeds_float32() -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(7, 3, 4, 4))[:, :, ::-1]  # float64, not contiguous
    session = RecordingSession()
    out = run_session(session, images, batch_size=3)
    assert session.batches == [3, 3, 1]
    assert session.dtypes == [np.float32] * 3
    np.testing.assert_allclose(out, images.mean(axis=(2, 3)) @ W, rtol=1e-5)


def test_run_session_default_batch_is_32_and_empty_input_is_empty() -> None:
    session = RecordingSession()
    assert run_session(session, np.zeros((33, 3, 2, 2), dtype=np.float32)).shape == (33, 3)
    assert session.batches == [32, 1]
    empty = run_session(RecordingSession(), np.zeros((0, 3, 2, 2), dtype=np.float32))
    assert empty.shape == (0, 0) and empty.dtype == np.float32


def test_run_session_on_a_real_session(model_file) -> None:
    x = np.random.default_rng(1).normal(size=(5, 3, 8, 8)).astype(np.float32)
    out = run_session(create_session(model_file), x, batch_size=2)
    np.testing.assert_allclose(out, x.mean(axis=(2, 3)) @ W, rtol=1e-5, atol=1e-6)


# --- the parity check -------------------------------------------------------------------------


def test_parity_report_to_dict() -> None:
    report = ParityReport(0.5, 0.25, 1.0, 4, 1e-4, False)
    assert report.to_dict() == {
        "max_abs_diff": 0.5,
        "mean_abs_diff": 0.25,
        "top1_agreement": 1.0,
        "n_images": 4,
        "atol": 1e-4,
        "passed": False,
    }


def test_parity_passes_for_the_same_function_and_restores_train_mode(model_file) -> None:
    model = MeanLinear(W).train()
    images = torch.randn(5, 3, 8, 8)
    report = check_parity(model_file, model, images, batch_size=2)
    assert report.passed and report.n_images == 5 and report.top1_agreement == 1.0
    assert report.max_abs_diff <= 1e-5 and report.atol == E.PARITY_ATOL
    assert model.training


def test_parity_fails_on_other_weights_and_on_another_shape(tmp_path, model_file) -> None:
    other = W.copy()
    other[0, 0] += 0.01
    images = torch.ones(2, 3, 8, 8)
    # logits differ by 0.01 x mean of channel 0 (= 1); top-1 still agrees
    report = check_parity(model_file, MeanLinear(other), images)
    assert not report.passed and report.max_abs_diff == pytest.approx(0.01, rel=1e-3)
    assert report.top1_agreement == 1.0
    assert check_parity(model_file, MeanLinear(other), images, atol=0.02).passed
    with pytest.raises(CheckpointError, match="not the same model"):
        check_parity(model_file, MeanLinear(W[:, :2]), images)
    with pytest.raises(ValueError, match="at least one image"):
        check_parity(model_file, MeanLinear(W), images[:0])
