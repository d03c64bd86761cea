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


def test_create_session_spinning_follows_the_argument_else_omp_wait_policy(
    model_file, monkeypatch
) -> None:
    """Breakage caught: the spinning entries not set (ORT's wheel then spins, taking the cores
    from torch), set on one pool only, inverted, or `OMP_WAIT_POLICY` read case- or
    space-sensitively (ADR 0003)."""

    def entries(session) -> tuple[str, str]:
        opts = session.get_session_options()
        return tuple(
            opts.get_session_config_entry(f"session.{pool}.allow_spinning")
            for pool in ("intra_op", "inter_op")
        )

    assert entries(create_session(model_file, spinning=True)) == ("1", "1")
    assert entries(create_session(model_file, spinning=False)) == ("0", "0")
    for policy, spins in ((" active ", True), ("ACTIVE", True), ("passive", False), ("", False)):
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
        assert E.default_spinning() is spins, policy
        expected = ("1", "1") if spins else ("0", "0")
        assert entries(create_session(model_file)) == expected, policy
        assert entries(create_session(model_file, spinning=not spins)) != expected, policy
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert E.default_spinning() is False


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


class CountingSession:
    """A real ORT session that logs the size of every batch it is fed."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.batches: list[int] = []

    def get_inputs(self):
        return self.inner.get_inputs()

    def run(self, outputs, feeds):
        self.batches.append(len(next(iter(feeds.values()))))
        return self.inner.run(outputs, feeds)


def _counting_sessions(monkeypatch) -> list[CountingSession]:
    made: list[CountingSession] = []

    def make(path):
        made.append(CountingSession(create_session(path)))
        return made[-1]

    monkeypatch.setattr(E, "create_session", make)
    return made


def _record_forwards(model: torch.nn.Module) -> list[tuple[int, bool, bool]]:
    """(batch size, model.training, grad enabled) of every eager forward."""
    seen: list[tuple[int, bool, bool]] = []
    model.register_forward_pre_hook(
        lambda m, args: seen.append((len(args[0]), m.training, torch.is_grad_enabled()))
    )
    return seen


def test_parity_report_fields_match_a_hand_computation(model_file) -> None:
    other = W.copy()
    other[1, 2] = 0.75  # class 2 gains 0.75 x mean of channel 1
    images = torch.from_numpy(np.random.default_rng(2).normal(size=(6, 3, 8, 8)).astype(np.float32))
    pooled = images.numpy().astype(np.float64).mean(axis=(2, 3))
    ort_logits, eager_logits = pooled @ W, pooled @ other
    diff = np.abs(ort_logits - eager_logits)
    report = check_parity(model_file, MeanLinear(other), images, atol=0.5, batch_size=4)
    assert report.n_images == 6 and report.atol == 0.5
    assert report.max_abs_diff == pytest.approx(diff.max(), rel=1e-5)
    assert report.mean_abs_diff == pytest.approx(diff.mean(), rel=1e-5)
    agree = (ort_logits.argmax(1) == eager_logits.argmax(1)).mean()
    assert 0 < agree < 1  # the seed makes some top-1s differ
    assert report.top1_agreement == pytest.approx(agree)
    assert not report.passed


def test_parity_passes_when_the_difference_equals_atol(model_file) -> None:
    other = W.copy()
    other[0, 0] = 1.25  # exact in float32: class 0 moves from 1.5 to 1.75 on all-ones images
    images = torch.ones(3, 3, 8, 8)
    report = check_parity(model_file, MeanLinear(other), images, atol=0.25)
    assert report.max_abs_diff == 0.25
    assert report.mean_abs_diff == pytest.approx(0.25 / 3)
    assert report.top1_agreement == 1.0  # class 1 (logit 2) wins in both
    assert report.passed  # max_abs_diff <= atol, boundary included
    assert not check_parity(model_file, MeanLinear(other), images, atol=0.2499).passed


def test_parity_batches_both_sides_by_batch_size(model_file, monkeypatch) -> None:
    sessions = _counting_sessions(monkeypatch)
    model = MeanLinear(W)
    seen = _record_forwards(model)
    images = torch.randn(5, 3, 8, 8)
    assert check_parity(model_file, model, images, batch_size=2).passed
    assert [n for n, _, _ in seen] == [2, 2, 1]
    assert sessions[-1].batches == [2, 2, 1]


def test_parity_default_batch_is_32(model_file, monkeypatch) -> None:
    sessions = _counting_sessions(monkeypatch)
    model = MeanLinear(W)
    seen = _record_forwards(model)
    report = check_parity(model_file, model, torch.randn(33, 3, 8, 8))
    assert report.passed and report.n_images == 33
    assert [n for n, _, _ in seen] == [32, 1]
    assert sessions[-1].batches == [32, 1]


def test_parity_runs_the_model_in_eval_mode_without_grad(model_file) -> None:
    model = torch.nn.Sequential(MeanLinear(W), torch.nn.Dropout(p=0.9)).train()
    seen = _record_forwards(model)
    outputs: list[torch.Tensor] = []
    model.register_forward_hook(lambda m, args, out: outputs.append(out))
    report = check_parity(model_file, model, torch.randn(4, 3, 8, 8), batch_size=3)
    assert report.passed  # dropout in train mode would zero or scale the logits
    assert seen == [(3, False, False), (1, False, False)]
    assert not any(out.requires_grad for out in outputs)
    assert model.training and model[1].training  # train mode restored, children included
    assert model[0].linear.weight.grad is None
    model.eval()
    check_parity(model_file, model, torch.randn(1, 3, 8, 8))
    assert not model.training  # eval mode stays eval


class NoParams(torch.nn.Module):
    """MeanLinear with the weights as a buffer: a model without parameters."""

    def __init__(self, weights: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("w", torch.tensor(weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) @ self.w


def test_parity_of_a_model_without_parameters(model_file) -> None:
    assert not list(NoParams(W).parameters())
    report = check_parity(model_file, NoParams(W), torch.randn(3, 3, 8, 8))
    assert report.passed and report.n_images == 3


class OnMeta(torch.nn.Module):
    """A model whose parameters live on another device ("meta"): logs the device of its
    inputs and answers zeros on the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 3, bias=False, device="meta")
        self.devices: list[torch.device] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.devices.append(x.device)
        return torch.zeros(len(x), 3)


def test_parity_moves_each_batch_to_the_model_device(model_file) -> None:
    model = OnMeta()
    images = torch.from_numpy(np.random.default_rng(3).normal(size=(3, 3, 8, 8)).astype(np.float32))
    report = check_parity(model_file, model, images, batch_size=2)
    assert model.devices == [torch.device("meta")] * 2
    ort_logits = images.numpy().astype(np.float64).mean(axis=(2, 3)) @ W
    assert report.max_abs_diff == pytest.approx(np.abs(ort_logits).max(), rel=1e-5)
    assert report.mean_abs_diff == pytest.approx(np.abs(ort_logits).mean(), rel=1e-5)
    assert report.top1_agreement == pytest.approx((ort_logits.argmax(1) == 0).mean())


def test_parity_with_nan_logits_reports_an_infinite_difference(model_file) -> None:
    other = W.copy()
    other[0, 2] = np.nan  # every eager logit of class 2 is NaN
    report = check_parity(model_file, MeanLinear(other), torch.ones(2, 3, 8, 8), atol=1e9)
    assert report.max_abs_diff == float("inf")
    assert not report.passed
    assert np.isnan(report.mean_abs_diff)


def test_parity_error_messages(model_file) -> None:
    images = torch.ones(2, 3, 8, 8)
    with pytest.raises(
        CheckpointError,
        match=r"^.*m\.onnx returns shape \(2, 3\), the model \(2, 2\): not the same model$",
    ):
        check_parity(model_file, MeanLinear(W[:, :2]), images)
    with pytest.raises(ValueError, match=r"^check_parity needs at least one image$"):
        check_parity(model_file, MeanLinear(W), images[:0])
