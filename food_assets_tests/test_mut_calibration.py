"""Temperature scaling against an independent optimum (`make mutation` kills its mutants here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import log_softmax

from food_assets.ml.errors import ConfigError
from food_assets.ml.evaluation.calibration import T_MAX, T_MIN, apply_temperature, fit_temperature


def _data(n: int = 300, c: int = 5, scale: float = 3.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) * scale
    logits[np.arange(n), labels] += 2
    return logits, labels


def _best_t(logits: np.ndarray, labels: np.ndarray, lo: float = T_MIN, hi: float = T_MAX) -> float:
    """The NLL minimiser by ternary search on 1/T (NLL is convex in 1/T), to machine precision."""
    rows = np.arange(len(labels))

    def nll(beta: float) -> float:
        return float(-log_softmax(logits * beta, axis=1)[rows, labels].mean())

    a, b = 1 / hi, 1 / lo
    for _ in range(200):
        m1, m2 = a + (b - a) / 3, b - (b - a) / 3
        if nll(m1) < nll(m2):
            b = m2
        else:
            a = m1
    return 2 / (a + b)


def test_fit_finds_the_nll_optimum() -> None:
    logits, labels = _data()
    t = fit_temperature(logits, labels)
    assert isinstance(t, float)
    assert t == pytest.approx(_best_t(logits, labels), rel=1e-6)


def test_fit_is_precise_on_several_problems() -> None:
    """Breakage caught: the search's tolerance loosened to scipy's default (xatol 1e-5 in
    log T): on some of these problems T then ends more than 1e-6 away from the optimum."""
    for seed in range(6):
        for scale in (0.5, 3.0, 8.0):
            logits, labels = _data(seed=seed, scale=scale)
            t = fit_temperature(logits, labels)
            assert t == pytest.approx(_best_t(logits, labels), rel=1e-6), (seed, scale)


def test_fit_is_the_same_for_float32_logits_and_list_labels() -> None:
    # The fit runs in float64 whatever the input; float32 arithmetic would move T by ~1e-3.
    logits, labels = _data()
    t64 = fit_temperature(logits, labels)
    t32 = fit_temperature(logits.astype(np.float32), labels.astype(np.float64))
    assert t32 == pytest.approx(t64, rel=1e-6)
    assert fit_temperature(logits.tolist(), labels.tolist()) == pytest.approx(t64, rel=1e-9)


def test_fit_respects_the_bounds() -> None:
    logits, labels = _data()
    best = _best_t(logits, labels)  # about 5
    assert fit_temperature(logits, labels, bounds=(0.1, 2.0)) == pytest.approx(2.0, rel=1e-4)
    assert fit_temperature(logits, labels, bounds=(8.0, 50.0)) == pytest.approx(8.0, rel=1e-4)
    assert fit_temperature(logits, labels, bounds=(1.0, 9.0)) == pytest.approx(best, rel=1e-6)
    # the default range is [T_MIN, T_MAX]: a far too confident model stops at T_MAX ...
    sure_wrong = np.zeros((4, 2))
    sure_wrong[:, 0] = 500.0
    assert fit_temperature(sure_wrong, np.array([0, 1, 0, 1])) == pytest.approx(T_MAX, rel=1e-4)
    # ... and a far too timid one at T_MIN
    timid = np.array([[1e-3, 0.0], [0.0, 1e-3]])
    assert fit_temperature(timid, np.array([0, 1])) == pytest.approx(T_MIN, rel=1e-4)


def test_fit_on_one_row() -> None:
    # one validation row, predicted right: sharpening always helps -> towards the lower bound
    # (the NLL is flat to 1e-17 there, so the search stops short of it)
    assert T_MIN <= fit_temperature(np.array([[2.0, 0.0]]), np.array([0])) < 0.1


@pytest.mark.parametrize(
    ("logits", "labels", "kwargs", "message"),
    [
        (
            np.zeros(3),
            [0, 0, 0],
            {},
            r"^fit_temperature needs non-empty \(N, C\) validation logits; got shape \(3,\)$",
        ),
        (
            np.zeros((0, 3)),
            np.zeros(0, dtype=int),
            {},
            r"^fit_temperature needs non-empty \(N, C\) validation logits; got shape \(0, 3\)$",
        ),
        (np.zeros((2, 3)), [0, 1, 2], {}, r"^2 logit rows but labels have shape \(3,\)$"),
        (
            np.array([[0.0, np.nan]]),
            [0],
            {},
            r"^validation logits contain NaN or inf; cannot fit a temperature$",
        ),
        (np.zeros((2, 3)), [-1, 0], {}, r"^validation labels out of range for 3 classes$"),
        (np.zeros((2, 3)), [0, 3], {}, r"^validation labels out of range for 3 classes$"),
        (
            np.zeros((2, 3)),
            [0, 2],
            {"bounds": (0.0, 2.0)},
            r"^temperature bounds must satisfy 0 < low < high; got \(0.0, 2.0\)$",
        ),
        (
            np.zeros((2, 3)),
            [0, 2],
            {"bounds": (2.0, 2.0)},
            r"^temperature bounds must satisfy 0 < low < high; got \(2.0, 2.0\)$",
        ),
    ],
)
def test_fit_refuses_bad_input_with_the_reason(logits, labels, kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        fit_temperature(logits, np.asarray(labels), **kwargs)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_apply_keeps_a_float_dtype(dtype) -> None:
    logits = np.array([[1.0, -2.0], [4.0, 0.5]], dtype=dtype)
    out = apply_temperature(logits, 2.0)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.array([[0.5, -1.0], [2.0, 0.25]], dtype=dtype))


def test_apply_divides_in_the_input_dtype_and_accepts_t_below_one() -> None:
    logits = np.array([[1.0, 2.0, 3.0, 5.0, 7.0]], dtype=np.float32)
    # 1.1 is not a float32: the division uses float32(1.1), as a float32 runtime would
    np.testing.assert_array_equal(apply_temperature(logits, 1.1), logits / np.float32(1.1))
    # T < 1 sharpens: allowed
    np.testing.assert_array_equal(apply_temperature(logits, 0.5), logits * 2)


def test_apply_turns_integers_into_float64() -> None:
    out = apply_temperature(np.array([[3, 1]]), 2.0)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[1.5, 0.5]])


@pytest.mark.parametrize("t", [0.0, -1.0, math.inf, math.nan])
def test_apply_refuses_a_bad_temperature(t: float) -> None:
    with pytest.raises(
        ConfigError, match=rf"^temperature must be a positive finite number, got {t}$"
    ):
        apply_temperature(np.zeros((1, 2)), t)
