"""Metrics on inputs small enough to work out by hand (`make mutation` kills its mutants here).

Each expected number is derived in a comment next to it, not copied from the code's output.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from food_assets.ml.errors import ConfigError
from food_assets.ml.evaluation import metrics as M

# --- input checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.zeros(3), [0, 0, 0], r"^scores must be a non-empty \(N, C\) array; got shape \(3,\)$"),
        (np.zeros((0, 3)), [], r"^scores must be a non-empty \(N, C\) array; got shape \(0, 3\)$"),
        (np.zeros((2, 3)), [0, 1, 2], r"^2 score rows but labels have shape \(3,\)$"),
        (np.zeros((2, 3)), [[0, 1]], r"^2 score rows but labels have shape \(1, 2\)$"),
        (
            np.array([[0.0, np.inf], [0.0, 0.0]]),
            [0, 1],
            r"^scores contain NaN or inf; the model diverged or the logits are corrupt$",
        ),
        (np.array([[0.0, np.nan], [0.0, 0.0]]), [0, 1], "NaN or inf"),
        (np.zeros((2, 3)), [-1, 2], r"^labels must lie in \[0, 2\] for 3 classes; got -1\.\.2$"),
        (np.zeros((2, 3)), [0, 3], r"^labels must lie in \[0, 2\] for 3 classes; got 0\.\.3$"),
    ],
)
def test_bad_scores_or_labels_are_refused_with_the_reason(scores, labels, message) -> None:
    with pytest.raises(ConfigError, match=message):
        M.negative_log_likelihood(scores, np.asarray(labels))


def test_labels_at_the_edges_of_the_range_are_accepted_and_cast_to_int() -> None:
    logits = np.zeros((2, 3))
    # float labels (as read back from a table) index like ints: ln 3 each
    loss = M.per_sample_loss(logits, np.array([0.0, 2.0]))
    np.testing.assert_allclose(loss, [math.log(3), math.log(3)])
    assert M.per_sample_loss(np.zeros((1, 3)), np.array([0])).shape == (1,)


# --- probabilities and losses -----------------------------------------------------------------


def test_softmax_is_row_wise_in_float64() -> None:
    logits = np.array([[0.0, math.log(3)], [math.log(4), 0.0]], dtype=np.float32)
    probs = M.softmax(logits)
    assert probs.dtype == np.float64
    # e^0 : e^ln3 = 1 : 3 and 4 : 1
    np.testing.assert_allclose(probs, [[0.25, 0.75], [0.8, 0.2]], rtol=1e-6)


def test_nll_and_per_sample_loss_by_hand() -> None:
    # row 0: p(true = 0) = 1 / (1 + 3) -> ln 4; row 1: p(true = 0) = 4 / 5 -> ln 1.25
    logits = np.array([[0.0, math.log(3)], [math.log(4), 0.0]])
    labels = np.array([0, 0])
    per_row = M.per_sample_loss(logits, labels)
    assert per_row.dtype == np.float64
    np.testing.assert_allclose(per_row, [math.log(4), math.log(1.25)])
    nll = M.negative_log_likelihood(logits, labels)
    assert isinstance(nll, float)
    assert nll == pytest.approx((math.log(4) + math.log(1.25)) / 2)
    # stable for huge logits (exp would overflow): p(true) = 1 / (1 + e^-1000) -> loss ~ 0
    assert M.negative_log_likelihood(np.array([[1000.0, 0.0]]), np.array([0])) == pytest.approx(0)


# --- top-k ------------------------------------------------------------------------------------


def test_top_k_indices_best_first_ties_to_the_higher_index() -> None:
    scores = np.array([[0.1, 0.5, 0.4, 0.0], [1.0, 1.0, 0.0, 1.0]])
    np.testing.assert_array_equal(M.top_k_indices(scores, 2), [[1, 2], [3, 1]])
    np.testing.assert_array_equal(M.top_k_indices(scores, 1), [[1], [3]])
    # k larger than the class count: every class, still best first
    np.testing.assert_array_equal(M.top_k_indices(scores, 9), [[1, 2, 0, 3], [3, 1, 0, 2]])
    # k given as a float from a config is truncated to an int
    assert M.top_k_indices(scores, 2.0).shape == (2, 2)


def test_top_k_indices_ties_at_food101_size_rank_the_higher_index_first() -> None:
    # Many ties among 101 classes: a sort that is not stable would order them arbitrarily.
    scores = np.random.default_rng(0).integers(0, 3, size=(20, 101)).astype(float)
    want = [sorted(range(101), key=lambda j, row=row: (-row[j], -j))[:5] for row in scores]
    np.testing.assert_array_equal(M.top_k_indices(scores, 5), want)


def test_top_k_indices_with_more_rows_than_classes() -> None:
    scores = np.array([[0.0, 1.0]] * 5)
    np.testing.assert_array_equal(M.top_k_indices(scores, 3), [[1, 0]] * 5)


def test_top_k_hits_and_accuracy_by_hand() -> None:
    scores = np.array(
        [
            [0.5, 0.3, 0.2, 0.0],  # true 1: 2nd
            [0.1, 0.2, 0.3, 0.4],  # true 0: 4th
            [0.0, 0.0, 1.0, 0.0],  # true 2: 1st
            [0.3, 0.2, 0.4, 0.1],  # true 1: 3rd
        ]
    )
    labels = np.array([1, 0, 2, 1])
    np.testing.assert_array_equal(M.top_k_hits(scores, labels, 1), [False, False, True, False])
    np.testing.assert_array_equal(M.top_k_hits(scores, labels, 2), [True, False, True, False])
    assert M.top_k_hits(scores, labels, 2).dtype == bool
    assert M.top_k_accuracy(scores, labels, 1) == 0.25
    assert M.top_k_accuracy(scores, labels, 2) == 0.5
    assert M.top_k_accuracy(scores, labels, 3) == 0.75
    # k = C: every class is in the top k (and scikit-learn, which would warn, is not asked)
    assert M.top_k_accuracy(scores, labels, 4) == 1.0
    assert M.top_k_accuracy(scores, labels, 7) == 1.0


def test_top_k_accuracy_with_two_classes() -> None:
    # 2 classes: rows 0 and 2 right at k=1
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    labels = np.array([0, 1, 1])
    acc = M.top_k_accuracy(scores, labels, 1)
    assert isinstance(acc, float) and acc == pytest.approx(2 / 3)
    assert M.top_k_accuracy(scores, labels, 2) == 1.0


def test_top_k_accuracy_with_three_classes_uses_the_labels_not_the_classes_present() -> None:
    # class 2 never occurs in the labels; still 3 classes. Top-2 hits: rows 0 and 1.
    scores = np.array([[0.3, 0.5, 0.2], [0.6, 0.1, 0.3], [0.5, 0.1, 0.4]])
    labels = np.array([0, 0, 1])
    assert M.top_k_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert M.top_k_accuracy(scores, labels, 1) == pytest.approx(1 / 3)


# --- bootstrap --------------------------------------------------------------------------------


def _reference_bootstrap(v: np.ndarray, n_resamples: int, seed: int, confidence: float):
    """The documented percentile bootstrap, in one draw, without chunks."""
    v = v[:, None] if v.ndim == 1 else v
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_resamples, len(v)))
    means = v[idx].mean(axis=1)
    a = (1 - confidence) / 2
    return np.quantile(means, a, axis=0), np.quantile(means, 1 - a, axis=0)


def test_bootstrap_matches_a_one_draw_reference_whatever_the_chunk_size() -> None:
    rng = np.random.default_rng(1)
    values = (rng.random((37, 2)) < [0.3, 0.8]).astype(float)
    want_low, want_high = _reference_bootstrap(values, 200, 4, 0.9)
    for chunk in (37, 37 * 3, 37 * 7 + 5, 10**9):  # 1, 3, 7 and all resamples per chunk
        low, high = M.bootstrap_ci(
            values, n_resamples=200, seed=4, confidence=0.9, chunk_elements=chunk
        )
        np.testing.assert_allclose(low, want_low, rtol=0, atol=1e-12)
        np.testing.assert_allclose(high, want_high, rtol=0, atol=1e-12)
        assert low.shape == high.shape == (2,)
    # fewer elements per chunk than rows: still one resample per chunk, same answer
    low, high = M.bootstrap_ci(values, n_resamples=200, seed=4, confidence=0.9, chunk_elements=5)
    np.testing.assert_allclose(low, want_low, rtol=0, atol=1e-12)


def test_bootstrap_defaults_and_one_d_input() -> None:
    # continuous values: neighbouring resample means differ, so 1000 vs 1001 resamples shows
    values = np.random.default_rng(2).random(50)
    low, high = M.bootstrap_ci(values)
    want_low, want_high = _reference_bootstrap(values, 1000, 0, 0.95)
    assert np.ndim(low) == 0 and np.ndim(high) == 0
    assert float(low) == pytest.approx(float(want_low[0]), abs=1e-12)
    assert float(high) == pytest.approx(float(want_high[0]), abs=1e-12)
    assert low <= values.mean() <= high
    ints = np.array([1, 0, 0, 1, 1, 1, 0, 1, 1, 1], dtype=np.int64)
    assert M.bootstrap_ci(ints, n_resamples=50)[0] <= 0.7 <= M.bootstrap_ci(ints, n_resamples=50)[1]


def test_bootstrap_averages_in_float64_whatever_the_input_dtype() -> None:
    values = np.random.default_rng(5).random(37).astype(np.float32)
    low, high = M.bootstrap_ci(values, n_resamples=100, seed=1)
    want_low, want_high = _reference_bootstrap(values.astype(np.float64), 100, 1, 0.95)
    assert float(low) == pytest.approx(float(want_low[0]), rel=0, abs=1e-14)
    assert float(high) == pytest.approx(float(want_high[0]), rel=0, abs=1e-14)


def test_bootstrap_of_a_constant_is_that_constant() -> None:
    low, high = M.bootstrap_ci(np.full(5, 0.25), n_resamples=1, seed=3)
    assert float(low) == float(high) == 0.25


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": np.zeros(0)}, r"^cannot bootstrap an empty sample$"),
        ({"values": np.zeros(3), "n_resamples": 0}, r"^n_resamples must be >= 1, got 0$"),
        ({"values": np.zeros(3), "confidence": 0.0}, r"^confidence must be in \(0, 1\), got 0.0$"),
        ({"values": np.zeros(3), "confidence": 1.0}, r"^confidence must be in \(0, 1\), got 1.0$"),
    ],
)
def test_bootstrap_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        M.bootstrap_ci(**kwargs)


def test_accuracy_with_ci_keys_values_and_defaults() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(500, 7))
    labels = rng.integers(0, 7, size=500)
    out = M.accuracy_with_ci(scores, labels, n_resamples=50, seed=2, confidence=0.8)
    assert list(out) == [
        "acc_top1", "acc_top1_ci_low", "acc_top1_ci_high",
        "acc_top5", "acc_top5_ci_low", "acc_top5_ci_high",
    ]  # fmt: skip
    ranks = (-scores).argsort(axis=1)  # no ties in random normals
    for k in (1, 5):
        hits = (ranks[:, :k] == labels[:, None]).any(axis=1).astype(float)
        assert out[f"acc_top{k}"] == pytest.approx(hits.mean())
    both = np.stack([(ranks[:, :k] == labels[:, None]).any(axis=1) for k in (1, 5)], axis=1).astype(
        float
    )
    low, high = _reference_bootstrap(both, 50, 2, 0.8)
    for j, k in enumerate((1, 5)):
        assert out[f"acc_top{k}_ci_low"] == pytest.approx(low[j], abs=1e-12)
        assert out[f"acc_top{k}_ci_high"] == pytest.approx(high[j], abs=1e-12)
        assert all(isinstance(out[f"acc_top{k}{s}"], float) for s in ("", "_ci_low", "_ci_high"))
    # defaults: 1000 resamples, seed 0, 95 %
    default = M.accuracy_with_ci(scores, labels)
    low, high = _reference_bootstrap(both, 1000, 0, 0.95)
    for j, k in enumerate((1, 5)):
        assert default[f"acc_top{k}_ci_low"] == pytest.approx(low[j], abs=1e-12)
        assert default[f"acc_top{k}_ci_high"] == pytest.approx(high[j], abs=1e-12)
    assert list(M.accuracy_with_ci(scores, labels, ks=(3,), n_resamples=5)) == [
        "acc_top3", "acc_top3_ci_low", "acc_top3_ci_high",
    ]  # fmt: skip


def test_accuracy_with_ci_default_bootstrap_settings(monkeypatch) -> None:
    # 0/1 hits make neighbouring resample means equal, so 1000 vs 1001 resamples rarely shows
    # in the figures: check the settings handed to the bootstrap instead.
    seen = {}

    def spy(values, **kwargs):
        seen.update(kwargs)
        return np.zeros(values.shape[1]), np.ones(values.shape[1])

    monkeypatch.setattr(M, "bootstrap_ci", spy)
    M.accuracy_with_ci(np.eye(6), np.arange(6))
    assert seen == {"n_resamples": 1000, "seed": 0, "confidence": 0.95}


# --- classification report --------------------------------------------------------------------


def test_classification_metrics_by_hand_with_empty_classes() -> None:
    # true 0 0 1 1 2, predicted 0 1 1 1 1; class 3 neither occurs nor is predicted.
    #   class 0: P = 1/1, R = 1/2, F1 = 2/3; class 1: P = 2/4, R = 2/2, F1 = 2/3
    #   class 2: never predicted -> P NaN, R = 0/1, F1 = 0 (2TP / (2TP + FP + FN) = 0/1)
    #   class 3: P, R, F1 NaN, support 0
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 1])
    per_class, avg = M.classification_metrics(labels, preds, 4)
    assert list(per_class.columns) == ["class_idx", "precision", "recall", "f1", "support"]
    assert per_class["class_idx"].tolist() == [0, 1, 2, 3]
    assert per_class["support"].tolist() == [2, 2, 1, 0]
    assert per_class["support"].dtype == np.int64
    np.testing.assert_allclose(per_class["precision"], [1, 0.5, np.nan, np.nan])
    np.testing.assert_allclose(per_class["recall"], [0.5, 1, 0, np.nan])
    np.testing.assert_allclose(per_class["f1"], [2 / 3, 2 / 3, 0, np.nan])
    # macro: NaNs left out. weighted by support (NaN precision of class 2 left out: 2 + 2).
    assert avg == pytest.approx(
        {
            "macro_precision": (1 + 0.5) / 2,
            "macro_recall": (0.5 + 1 + 0) / 3,
            "macro_f1": (2 / 3 + 2 / 3 + 0) / 3,
            "weighted_precision": (1 * 2 + 0.5 * 2) / 4,
            "weighted_recall": (0.5 * 2 + 1 * 2 + 0 * 1) / 5,
            "weighted_f1": (2 / 3 * 2 + 2 / 3 * 2 + 0 * 1) / 5,
        }
    )
    assert list(avg) == [
        "macro_precision", "macro_recall", "macro_f1",
        "weighted_precision", "weighted_recall", "weighted_f1",
    ]  # fmt: skip
    assert all(type(v) is float for v in avg.values())


# --- ranking curves ---------------------------------------------------------------------------


def test_one_vs_rest_auc_by_hand() -> None:
    # class 1: positives score 0.9, 0.7; negatives 0.8, 0.1.
    #   ROC AUC: pairs (pos > neg) = 3 of 4 = 0.75. AP: precision 1/1 at 0.9, 2/3 at 0.7 -> 5/6.
    # class 0: positives (rows 1, 3) score 0.2, 0.9; negatives 0.1, 0.3 -> 3 of 4 pairs; ranking
    #   0.9 (pos), 0.3, 0.2 (pos), 0.1 -> AP = (1 + 2/3) / 2 = 5/6. Class 2 never occurs.
    probs = np.array([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.3, 0.7, 0.0], [0.9, 0.1, 0.0]])
    labels = np.array([1, 0, 1, 0])
    out = M.one_vs_rest_auc(labels, probs)
    assert list(out.columns) == ["class_idx", "roc_auc", "pr_auc", "note"]
    assert out["class_idx"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(out["roc_auc"], [0.75, 0.75, np.nan])
    np.testing.assert_allclose(out["pr_auc"], [5 / 6, 5 / 6, np.nan])
    assert out["note"].tolist() == ["", "", "absent from the labels: AUC undefined"]


def test_one_vs_rest_auc_when_every_label_is_one_class() -> None:
    probs = np.array([[0.2, 0.7, 0.1], [0.4, 0.5, 0.1], [0.1, 0.8, 0.1]])
    out = M.one_vs_rest_auc(np.array([1, 1, 1]), probs)
    assert out["note"].tolist() == [
        "absent from the labels: AUC undefined",
        "no negative examples: AUC undefined",
        "absent from the labels: AUC undefined",
    ]
    assert out[["roc_auc", "pr_auc"]].isna().all().all()


def test_roc_pr_curves_by_hand() -> None:
    # class 1: scores 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg)
    #   ROC corners: (0, 0) (0, .5) (.5, .5) (.5, 1) (1, 1); PR: recall 1 at threshold .7 with
    #   precision 2/3, recall .5 at .9 with precision 1.
    probs = np.array([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.3, 0.7, 0.0], [0.9, 0.1, 0.0]])
    labels = np.array([1, 0, 1, 2])
    curves = M.roc_pr_curves(labels, probs, classes=[1, 2])
    assert list(curves) == [1, 2]
    c = curves[1]
    assert set(c) == {"fpr", "tpr", "precision", "recall", "prevalence"}
    # class 1 negatives are rows 1 and 3 (labels 0 and 2)
    np.testing.assert_allclose(c["fpr"], [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(c["tpr"], [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(c["precision"], [0.5, 2 / 3, 0.5, 1, 1])
    np.testing.assert_allclose(c["recall"], [1, 1, 0.5, 0.5, 0])
    assert c["prevalence"] == 0.5 and isinstance(c["prevalence"], np.float64)
    # class 2: one positive (row 3, score 0.0), 3 negatives also at 0.0 -> prevalence 1/4
    assert curves[2]["prevalence"] == 0.25


def test_roc_pr_curves_skip_classes_without_positives_or_negatives() -> None:
    probs = np.array([[0.6, 0.4, 0.0], [0.3, 0.7, 0.0]])
    assert list(M.roc_pr_curves(np.array([1, 1]), probs, classes=[0, 1, 2])) == []
    curves = M.roc_pr_curves(np.array([0, 1]), probs, classes=np.array([1, 2, 0]))
    assert list(curves) == [1, 0] and all(type(k) is int for k in curves)


# --- calibration error ------------------------------------------------------------------------

# 6 rows, 5 classes, 4 bins [0, .25) [.25, .5) [.5, .75) [.75, 1]:
#   conf .7  right -> bin 2     conf .5 (tie: argmax 0) wrong -> bin 2 (an edge goes up)
#   conf 1.0 right -> bin 3     conf .9 wrong -> bin 3
#   conf .4  right -> bin 1     conf .2 (tie: argmax 0) wrong -> bin 0
_PROBS = np.array(
    [
        [0.7, 0.2, 0.1, 0.0, 0.0],
        [0.5, 0.5, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0, 0.0],
        [0.1, 0.9, 0.0, 0.0, 0.0],
        [0.4, 0.3, 0.3, 0.0, 0.0],
        [0.2, 0.2, 0.2, 0.2, 0.2],
    ]
)
_LABELS = np.array([0, 1, 2, 0, 0, 4])


def test_reliability_bins_by_hand() -> None:
    bins = M.reliability_bins(_PROBS, _LABELS, n_bins=4)
    assert list(bins.columns) == ["bin_low", "bin_high", "count", "accuracy", "confidence"]
    np.testing.assert_allclose(bins["bin_low"], [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(bins["bin_high"], [0.25, 0.5, 0.75, 1])
    assert bins["count"].tolist() == [1, 1, 2, 2] and bins["count"].dtype == np.int64
    np.testing.assert_allclose(bins["accuracy"], [0, 1, 0.5, 0.5])
    np.testing.assert_allclose(bins["confidence"], [0.2, 0.4, 0.6, 0.95])


def test_reliability_bins_empty_bins_are_nan_and_the_default_is_15() -> None:
    bins = M.reliability_bins(_PROBS[:3], _LABELS[:3], n_bins=4)  # bins 2, 2, 3
    assert bins["count"].tolist() == [0, 0, 2, 1]
    assert bins.loc[:1, ["accuracy", "confidence"]].isna().all().all()
    # the top bins empty too: every row is in [.25, .5)
    low = M.reliability_bins(_PROBS[4:5], _LABELS[4:5], n_bins=4)
    assert low["count"].tolist() == [0, 1, 0, 0]
    np.testing.assert_allclose(low["accuracy"], [np.nan, 1, np.nan, np.nan])
    np.testing.assert_allclose(low["confidence"], [np.nan, 0.4, np.nan, np.nan])
    default = M.reliability_bins(_PROBS, _LABELS)
    assert len(default) == 15
    np.testing.assert_allclose(default["bin_high"], np.arange(1, 16) / 15)
    # conf .2 -> [.2, .267) = bin 3; .4 -> bin 6; .5 -> bin 7; .7 -> bin 10; .9 -> bin 13; 1 -> 14
    assert np.flatnonzero(default["count"]).tolist() == [3, 6, 7, 10, 13, 14]


def test_reliability_bins_clip_scores_outside_0_1_into_the_end_bins() -> None:
    # scores, not probabilities: -0.5 goes in the first bin, 1.5 in the last
    bins = M.reliability_bins(np.array([[-0.5, -0.7], [1.5, 0.0]]), np.array([0, 1]), n_bins=4)
    assert bins["count"].tolist() == [1, 0, 0, 1]


def test_expected_calibration_error_by_hand() -> None:
    # (1/6)|0 - .2| + (1/6)|1 - .4| + (2/6)|.5 - .6| + (2/6)|.5 - .95| = 1.9 / 6
    ece = M.expected_calibration_error(_PROBS, _LABELS, n_bins=4)
    assert isinstance(ece, float) and ece == pytest.approx(1.9 / 6)
    # 15 bins: each row alone in its bin; gaps .2, .6, .5, .3, .9, 0 -> 2.5 / 6
    assert M.expected_calibration_error(_PROBS, _LABELS) == pytest.approx(2.5 / 6)


# --- confusion --------------------------------------------------------------------------------


def test_confusion_matrix_rows_are_true_columns_predicted() -> None:
    cm = M.confusion_matrix(np.array([0, 0, 1, 2]), np.array([1, 0, 1, 1]), 4)
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])


def test_most_confused_pairs_by_hand() -> None:
    # off-diagonal: (0,1)=2 (0,2)=2 (1,0)=3 (2,0)=2; rows sum to 9, 7, 8.
    # count desc, then true, then predicted: (1,0) (0,1) (0,2) (2,0)
    cm = np.array([[5, 2, 2], [3, 4, 0], [2, 0, 6]])
    out = M.most_confused_pairs(cm, ["a", "b", "c"])
    assert list(out.columns) == [
        "true_idx",
        "true_class",
        "pred_idx",
        "pred_class",
        "count",
        "rate",
    ]
    assert out["true_idx"].tolist() == [1, 0, 0, 2]
    assert out["pred_idx"].tolist() == [0, 1, 2, 0]
    assert out["true_class"].tolist() == ["b", "a", "a", "c"]
    assert out["pred_class"].tolist() == ["a", "b", "c", "a"]
    assert out["count"].tolist() == [3, 2, 2, 2]
    assert all(out[c].dtype == np.int64 for c in ("true_idx", "pred_idx", "count"))
    np.testing.assert_allclose(out["rate"], [3 / 7, 2 / 9, 2 / 9, 2 / 8])
    assert M.most_confused_pairs(cm, ["a", "b", "c"], top=2)["true_idx"].tolist() == [1, 0]
    # the input is not modified (its diagonal is zeroed on a copy)
    assert cm[0, 0] == 5


def test_most_confused_pairs_default_top_is_20() -> None:
    cm = np.ones((6, 6), dtype=np.int64)  # 30 off-diagonal cells
    assert len(M.most_confused_pairs(cm, list("abcdef"))) == 20


# --- hardest examples -------------------------------------------------------------------------

# row 0: true 0, pred 0, p = e^2/(e^2+2)       loss -ln(e^2/(e^2+2))
# row 1: true 0, pred 1, conf e^3/(e^3+2)      loss ln(e^3+2)
# row 2: true 2, pred 0, conf e/(e+2)          loss ln(e+2)
# row 3: true 1, pred 2, conf e/(e+2), loss ln(e+2)
_LOGITS = np.array([[2.0, 0, 0], [0, 3.0, 0], [1.0, 0, 0], [0, 0, 1.0]])
_TRUE = np.array([0, 0, 2, 1])
_NAMES = ["x", "y", "z"]
_PATHS = [f"img{i}.jpg" for i in range(4)]
E = math.e


def test_hardest_examples_by_loss() -> None:
    out = M.hardest_examples(_LOGITS, _TRUE, _PATHS, _NAMES)
    assert list(out.columns) == [
        "index", "path", "true_idx", "true_class", "pred_idx", "pred_class",
        "confidence", "true_prob", "loss", "correct",
    ]  # fmt: skip
    # losses: ln(e^3+2) > ln(e+2) = ln(e+2) > small; ties by row
    assert out["index"].tolist() == [1, 2, 3, 0]
    assert out["index"].dtype == np.int64 and out["pred_idx"].dtype == np.int64
    assert out["path"].tolist() == ["img1.jpg", "img2.jpg", "img3.jpg", "img0.jpg"]
    assert out["true_idx"].tolist() == [0, 2, 1, 0]
    assert out["true_class"].tolist() == ["x", "z", "y", "x"]
    assert out["pred_idx"].tolist() == [1, 0, 2, 0]
    assert out["pred_class"].tolist() == ["y", "x", "z", "x"]
    np.testing.assert_allclose(
        out["confidence"], [E**3 / (E**3 + 2), E / (E + 2), E / (E + 2), E**2 / (E**2 + 2)]
    )
    np.testing.assert_allclose(
        out["true_prob"], [1 / (E**3 + 2), 1 / (E + 2), 1 / (E + 2), E**2 / (E**2 + 2)]
    )
    np.testing.assert_allclose(
        out["loss"],
        [math.log(E**3 + 2), math.log(E + 2), math.log(E + 2), math.log((E**2 + 2) / E**2)],
    )
    assert out["correct"].tolist() == [False, False, False, True]
    assert M.hardest_examples(_LOGITS, _TRUE, _PATHS, _NAMES, top=2)["index"].tolist() == [1, 2]


def test_hardest_examples_confident_wrong_only_misclassified_most_confident_first() -> None:
    out = M.hardest_examples(_LOGITS, _TRUE, _PATHS, _NAMES, by="confident_wrong")
    # wrong rows 1, 2, 3 with confidence .91, .58, .58 (tie -> row order)
    assert out["index"].tolist() == [1, 2, 3]
    assert not out["correct"].any()
    # the lower-confidence wrong row first if it is more confident than the others
    logits = _LOGITS.copy()
    logits[3] = [0, 0, 5.0]
    out = M.hardest_examples(logits, _TRUE, _PATHS, _NAMES, by="confident_wrong", top=2)
    assert out["index"].tolist() == [3, 1]


def test_hardest_examples_ties_in_the_logits_rank_like_top_k() -> None:
    # row 0: classes 0 and 1 tie -> the prediction is the higher index, as in top_k_indices
    out = M.hardest_examples(np.array([[1.0, 1.0, 0.0]]), np.array([1]), ["a"], _NAMES)
    assert out["pred_idx"].tolist() == [1] and out["correct"].tolist() == [True]


def test_hardest_examples_default_top_is_20_and_bad_ranking_is_refused() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(25, 3))
    labels = rng.integers(0, 3, size=25)
    paths = [str(i) for i in range(25)]
    assert len(M.hardest_examples(logits, labels, paths, _NAMES)) == 20
    with pytest.raises(
        ConfigError, match=r"^unknown ranking 'worst'; use 'loss' or 'confident_wrong'$"
    ):
        M.hardest_examples(logits, labels, paths, _NAMES, by="worst")


def test_results_are_plain_frames() -> None:
    assert isinstance(M.reliability_bins(_PROBS, _LABELS), pd.DataFrame)
