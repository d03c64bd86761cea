"""Evaluation layer: metrics checked against independent recomputation from the saved files.

Synthetic logits stand in for a model where only the numbers matter; `predict_logits` and the
thumbnail grid run on real images written with PIL.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

from food_assets.ml.artifacts import write_figure
from food_assets.ml.data.transforms import ImagePipeline, Preprocess
from food_assets.ml.errors import CheckpointError, ConfigError
from food_assets.ml.evaluation import (
    Predictions,
    apply_temperature,
    check_class_maps,
    compare_models,
    evaluate_model,
    fit_temperature,
    predict_logits,
    save_comparison,
)
from food_assets.ml.evaluation import metrics as M
from food_assets.ml.evaluation.plots import confusion_matrix_figure

C = 101
ABSENT = 100  # a class with no test image: its AUCs must be NaN with a note, not a crash


def _np_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _synthetic(n: int, c: int, rng: np.random.Generator, *, scale: float = 5.0) -> Predictions:
    """Logits whose softmax is the true label distribution, then sharpened by `scale`.

    Labels are drawn from softmax(z), so z is perfectly calibrated and `scale * z` is
    over-confident by exactly a factor `scale`: the fitted temperature should come back near it.
    """
    z = rng.normal(size=(n, c)) * 1.5
    z[np.arange(n), rng.integers(0, c, n)] += 3.0
    p = _np_softmax(z)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    paths = [f"/missing/{i}.jpg" for i in range(n)]
    return Predictions((scale * z).astype(np.float32), labels, paths)


def _names(c: int) -> list[str]:
    return [f"dish_{i:03d}" for i in range(c)]


def _write_images(folder: Path, n: int) -> list[str]:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        w, h = 40 + 7 * i, 36 + 5 * (i % 3)
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        arr[: h // 2, :, i % 3] = 255  # differ in colour, so the logits differ per image
        path = folder / f"img_{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory):
    rng = np.random.default_rng(123)
    test = _synthetic(3000, C, rng)
    labels = test.labels.copy()
    labels[labels == ABSENT] = 0
    test = Predictions(test.logits, labels, test.paths)
    val = _synthetic(2000, C, rng)
    out = tmp_path_factory.mktemp("eval")
    result = evaluate_model(test, val, _names(C), out, seed=0, n_bootstrap=300)
    return test, val, out, result


# --- metrics vs independent recomputation --------------------------------------------------


def test_saved_predictions_reproduce_accuracy(evaluated) -> None:
    test, _, out, result = evaluated
    table = pd.read_parquet(out / "predictions.parquet")
    summary = json.loads((out / "metrics.json").read_text())
    assert len(table) == len(test)
    assert table["path"].tolist() == test.paths
    true = table["true_idx"].to_numpy()
    top = table[[f"top{j}_idx" for j in range(1, 6)]].to_numpy()
    top5_hit = (top == true[:, None]).any(axis=1)
    assert summary["test/acc_top1"] == pytest.approx((top[:, 0] == true).mean(), abs=1e-12)
    assert summary["test/acc_top5"] == pytest.approx(top5_hit.mean(), abs=1e-12)
    # And from the raw logits by rank, independent of the saved ordering.
    rank = (test.logits > test.logits[np.arange(len(true)), true][:, None]).sum(axis=1)
    assert summary["test/acc_top1"] == pytest.approx((rank < 1).mean(), abs=1e-12)
    assert summary["test/acc_top5"] == pytest.approx((rank < 5).mean(), abs=1e-12)
    assert summary["test/acc_top1"] < summary["test/acc_top5"]
    # Probabilities: top-k calibrated ones use the fitted T, the raw one does not.
    cal = _np_softmax(test.logits / result.temperature)
    raw = _np_softmax(test.logits)
    rows = np.arange(len(true))
    np.testing.assert_allclose(table["top1_prob"], cal[rows, top[:, 0]], rtol=1e-6)
    np.testing.assert_allclose(table["top5_prob"], cal[rows, top[:, 4]], rtol=1e-6)
    np.testing.assert_allclose(table["top1_prob_raw"], raw.max(axis=1), rtol=1e-6)
    assert (np.diff(table[[f"top{j}_prob" for j in range(1, 6)]].to_numpy(), axis=1) <= 0).all()
    assert table["true_class"].tolist() == [_names(C)[i] for i in true]


def test_bootstrap_interval_contains_estimate_and_narrows(evaluated) -> None:
    _, _, _, result = evaluated
    s = result.summary
    for k in ("acc_top1", "acc_top5"):
        assert s[f"test/{k}_ci_low"] < s[f"test/{k}"] < s[f"test/{k}_ci_high"]
    rng = np.random.default_rng(0)
    small = (rng.random(200) < 0.7).astype(float)
    large = (rng.random(20_000) < 0.7).astype(float)
    lo_s, hi_s = M.bootstrap_ci(small, n_resamples=500, seed=0)
    lo_l, hi_l = M.bootstrap_ci(large, n_resamples=500, seed=0)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    # Width ~ 1/sqrt(n): 100x the data, about a tenth of the width.
    assert (hi_l - lo_l) < 0.2 * (hi_s - lo_s)
    # The normal approximation of a binomial proportion's 95 % interval, as a sanity bound.
    se = np.sqrt(0.7 * 0.3 / 200)
    assert (hi_s - lo_s) == pytest.approx(2 * 1.96 * se, rel=0.2)
    # Chunking the resamples does not change the result.
    a = M.bootstrap_ci(small, n_resamples=500, seed=3)
    b = M.bootstrap_ci(small, n_resamples=500, seed=3, chunk_elements=1000)
    assert a == b


def test_per_class_f1_matches_a_hand_loop(evaluated) -> None:
    _, _, out, result = evaluated
    table = pd.read_parquet(out / "predictions.parquet")
    per_class = pd.read_csv(out / "per_class.csv")
    true, pred = table["true_idx"].to_numpy(), table["top1_idx"].to_numpy()
    f1s, supports = [], []
    for k in range(C):
        tp = int(((pred == k) & (true == k)).sum())
        fp = int(((pred == k) & (true != k)).sum())
        fn = int(((pred != k) & (true == k)).sum())
        f1s.append(np.nan if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
        supports.append(tp + fn)
        row = per_class.iloc[k]
        assert row["class_name"] == _names(C)[k]
        assert row["support"] == tp + fn
        if tp + fn:
            assert row["recall"] == pytest.approx(tp / (tp + fn))
        if tp + fp:
            assert row["precision"] == pytest.approx(tp / (tp + fp))
    np.testing.assert_allclose(per_class["f1"], f1s, rtol=1e-12)
    f1s, supports = np.array(f1s), np.array(supports)
    assert result.summary["test/macro_f1"] == pytest.approx(np.nanmean(f1s))
    weighted = np.nansum(f1s * supports) / supports.sum()
    assert result.summary["test/weighted_f1"] == pytest.approx(weighted)
    assert per_class.loc[ABSENT, "support"] == 0
    assert result.summary["test/classes_absent"] == 1


def _numpy_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    ece = 0.0
    edges = np.linspace(0, 1, n_bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(ece)


def test_ece_matches_a_numpy_15_bin_implementation(evaluated) -> None:
    _, _, out, result = evaluated
    table = pd.read_parquet(out / "predictions.parquet")
    correct = (table["top1_idx"] == table["true_idx"]).to_numpy(float)
    raw = _numpy_ece(table["top1_prob_raw"].to_numpy(), correct)
    cal = _numpy_ece(table["top1_prob"].to_numpy(), correct)
    assert result.summary["test/ece"] == pytest.approx(raw, abs=1e-6)
    assert result.summary["test/ece_calibrated"] == pytest.approx(cal, abs=1e-6)
    # The same number as torchmetrics' MulticlassCalibrationError (which works in float32).
    from torchmetrics.classification import MulticlassCalibrationError

    probs = _np_softmax(_synthetic(500, 7, np.random.default_rng(5)).logits / 3)
    labels = np.random.default_rng(6).integers(0, 7, 500)
    reference = MulticlassCalibrationError(num_classes=7, n_bins=15, norm="l1")
    expected = float(reference(torch.from_numpy(probs), torch.from_numpy(labels)))
    assert M.expected_calibration_error(probs, labels) == pytest.approx(expected, abs=1e-6)
    # And the reliability bins behind the diagram are the ones the ECE averages.
    bins = M.reliability_bins(probs, labels)
    assert bins["count"].sum() == 500 and len(bins) == 15
    filled = bins[bins["count"] > 0]
    from_bins = (filled["count"] / 500 * (filled["accuracy"] - filled["confidence"]).abs()).sum()
    assert M.expected_calibration_error(probs, labels) == pytest.approx(from_bins, abs=1e-12)


def test_roc_and_pr_auc_match_sklearn_and_absent_class_is_nan(evaluated) -> None:
    test, _, _, result = evaluated
    probs = _np_softmax(test.logits)
    cal = _np_softmax(test.logits / result.temperature)
    pc = result.per_class
    for k in (0, 17, 63):
        positive = test.labels == k
        assert pc.loc[k, "roc_auc"] == pytest.approx(roc_auc_score(positive, probs[:, k]))
        assert pc.loc[k, "pr_auc"] == pytest.approx(average_precision_score(positive, probs[:, k]))
        assert pc.loc[k, "roc_auc_calibrated"] == pytest.approx(roc_auc_score(positive, cal[:, k]))
    assert np.isnan(pc.loc[ABSENT, "roc_auc"]) and np.isnan(pc.loc[ABSENT, "pr_auc"])
    assert "absent" in pc.loc[ABSENT, "note"]
    assert np.isfinite(result.summary["test/macro_roc_auc"])


def test_confused_pairs_and_hardest_examples(evaluated) -> None:
    test, _, out, result = evaluated
    table = pd.read_parquet(out / "predictions.parquet")
    wrong = table[table["top1_idx"] != table["true_idx"]]
    counts = wrong.groupby(["true_idx", "top1_idx"]).size()
    pairs = result.confused_pairs
    assert pairs["count"].iloc[0] == counts.max()
    assert pairs["count"].is_monotonic_decreasing
    for row in pairs.head(5).itertuples():
        assert counts[(row.true_idx, row.pred_idx)] == row.count
    hardest = result.hardest
    assert hardest["loss"].is_monotonic_decreasing
    assert hardest["loss"].iloc[0] == pytest.approx(table["loss"].max())
    assert hardest["path"].iloc[0] == test.paths[int(table["loss"].idxmax())]
    wrong_first = M.hardest_examples(
        test.logits, test.labels, test.paths, _names(C), top=10, by="confident_wrong"
    )
    assert not wrong_first["correct"].any() and wrong_first["confidence"].is_monotonic_decreasing


def test_files_and_figures_are_written(evaluated) -> None:
    _, _, out, result = evaluated
    summary = json.loads((out / "metrics.json").read_text())
    for key in (
        "test/acc_top1",
        "test/acc_top1_ci_low",
        "test/acc_top1_ci_high",
        "test/acc_top5",
        "test/macro_f1",
        "test/weighted_f1",
        "test/ece",
        "test/ece_calibrated",
        "temperature",
    ):
        # The file holds the very numbers the other tests recompute from `result.summary`
        # (once only their type was checked). Breakage tried: metrics.json rounded to 3 places.
        assert isinstance(summary[key], float), key
        assert summary[key] == result.summary[key], key
    assert summary["temperature"] == result.temperature
    assert set(result.plots) == {
        "confusion_matrix",
        "roc_pr_worst",
        "reliability",
        "hardest_examples",
    }
    for path in [*result.plots.values(), *result.files.values()]:
        assert path.is_file() and path.stat().st_size > 0
    with Image.open(result.plots["confusion_matrix"]) as img:
        assert min(img.size) > 1500  # 101 legible rows need room
    assert not list(out.glob(".*tmp*"))  # atomic writes left no temporaries behind
    pd.testing.assert_frame_equal(pd.read_parquet(out / "per_class.parquet"), result.per_class)


# --- calibration -----------------------------------------------------------------------------


def test_temperature_scaling_fixes_an_overconfident_model() -> None:
    rng = np.random.default_rng(7)
    val, test = _synthetic(3000, 20, rng, scale=5.0), _synthetic(3000, 20, rng, scale=5.0)
    t = fit_temperature(val.logits, val.labels)
    assert t > 1 and t == pytest.approx(5.0, rel=0.1)  # labels were drawn at T = 5
    before = M.expected_calibration_error(M.softmax(test.logits), test.labels)
    after = M.expected_calibration_error(M.softmax(apply_temperature(test.logits, t)), test.labels)
    assert after < 0.5 * before
    nll_before = M.negative_log_likelihood(test.logits, test.labels)
    assert M.negative_log_likelihood(test.logits / t, test.labels) < nll_before
    # A calibrated model is left (nearly) alone, and scaling never changes the ranking.
    calibrated = _synthetic(3000, 20, rng, scale=1.0)
    assert fit_temperature(calibrated.logits, calibrated.labels) == pytest.approx(1.0, rel=0.1)
    assert (apply_temperature(test.logits, t).argmax(1) == test.logits.argmax(1)).all()
    with pytest.raises(ConfigError, match="positive"):
        apply_temperature(test.logits, 0.0)


def test_evaluate_reports_lower_ece_after_scaling(evaluated) -> None:
    _, _, _, result = evaluated
    s = result.summary
    assert result.temperature > 1 and s["temperature"] == result.temperature
    assert s["test/ece_calibrated"] < s["test/ece"]
    assert s["test/nll_calibrated"] < s["test/nll"]
    assert s["val/nll_calibrated"] < s["val/nll"]


# --- figures ---------------------------------------------------------------------------------


def test_confusion_matrix_grows_with_the_class_count(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sizes = {}
    for c in (10, 101):
        cm = rng.integers(0, 5, size=(c, c)) + np.diag(rng.integers(5, 40, size=c))
        fig = confusion_matrix_figure(cm, _names(c))
        ax = fig.axes[0]
        labels = ax.get_yticklabels()
        assert len(labels) == c and len(ax.get_xticklabels()) == c  # every class is labelled
        assert min(t.get_fontsize() for t in labels) >= 5
        # Worst class first: the first row's accuracy is the lowest.
        acc = np.diag(cm) / cm.sum(axis=1)
        assert labels[0].get_text().startswith(_names(c)[int(acc.argmin())])
        with Image.open(write_figure(tmp_path / f"cm_{c}.png", fig)) as img:
            sizes[c] = img.size
    assert sizes[101][0] > 2 * sizes[10][0] and sizes[101][1] > 2 * sizes[10][1]


# --- determinism, real images ----------------------------------------------------------------


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_predict_logits_matches_calling_the_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    paths = _write_images(tmp_path, 7)
    frame = pd.DataFrame({"path": paths, "label_idx": [i % 3 for i in range(7)]})
    pre = Preprocess(input_size=32)
    model = TinyNet().train()  # eval mode must be switched on (dropout, batch norm) and undone
    preds = predict_logits(model, frame, pre, batch_size=3)
    assert model.training
    assert preds.logits.dtype == np.float32 and preds.logits.shape == (7, 3)
    assert preds.paths == paths and preds.labels.tolist() == frame["label_idx"].tolist()
    pipeline = ImagePipeline(pre, train=False)
    model.eval()
    with torch.no_grad():
        direct = model(torch.stack([pipeline(p) for p in paths])).numpy()
    np.testing.assert_allclose(preds.logits, direct, rtol=1e-5, atol=1e-6)
    again = predict_logits(model, frame, pre, batch_size=7)
    np.testing.assert_allclose(again.logits, preds.logits, rtol=1e-5, atol=1e-6)


def test_same_seed_gives_bit_identical_metrics(tmp_path: Path) -> None:
    images = _write_images(tmp_path, 4)
    rng = np.random.default_rng(11)
    base = _synthetic(400, 12, rng)
    # Real files behind the paths, so the thumbnail grid decodes real images.
    test = Predictions(base.logits, base.labels, [images[i % 4] for i in range(400)])
    val = _synthetic(300, 12, rng)
    runs = [
        evaluate_model(test, val, _names(12), tmp_path / f"run{i}", seed=4, n_bootstrap=200)
        for i in range(2)
    ]
    a, b = ((tmp_path / f"run{i}" / "metrics.json").read_bytes() for i in range(2))
    assert a == b
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "run0" / "predictions.parquet"),
        pd.read_parquet(tmp_path / "run1" / "predictions.parquet"),
    )
    other = evaluate_model(test, None, _names(12), tmp_path / "run2", seed=5, n_bootstrap=200)
    assert other.summary["test/acc_top1"] == runs[0].summary["test/acc_top1"]
    assert other.summary["test/acc_top1_ci_low"] != runs[0].summary["test/acc_top1_ci_low"]
    assert other.temperature == 1.0 and other.summary["temperature"] == 1.0
    assert runs[0].plots["hardest_examples"].stat().st_size > 10_000


# --- user mistakes ---------------------------------------------------------------------------


def test_class_map_mismatch_names_both_lists() -> None:
    check_class_maps(["apple_pie", "ramen"], ("apple_pie", "ramen"))
    with pytest.raises(CheckpointError) as info:
        check_class_maps(["apple_pie", "ramen", "sushi"], ["apple_pie", "sushi", "ramen"])
    msg = str(info.value)
    assert "model 'ramen' vs split 'sushi'" in msg and "#1" in msg
    assert "3 classes" in msg and "retrain" in msg
    with pytest.raises(CheckpointError) as info:
        check_class_maps(["apple_pie", "ramen"], ["apple_pie", "ramen", "waffles"])
    msg = str(info.value)
    assert "2 classes" in msg and "3 classes" in msg and "Only in the split: ['waffles']" in msg


def test_class_count_mismatch_names_both_counts(tmp_path: Path) -> None:
    preds = _synthetic(50, 5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"5 logit columns but class_names has 4 names"):
        evaluate_model(preds, None, _names(4), tmp_path)
    val = _synthetic(50, 6, np.random.default_rng(1))
    with pytest.raises(ConfigError, match=r"val predictions have 6 logit columns .* 5 names"):
        evaluate_model(preds, val, _names(5), tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written on a refused evaluation
    with pytest.raises(ConfigError, match="labels"):
        Predictions(np.zeros((3, 2)), np.zeros(2), ["a", "b", "c"])


# --- comparison ------------------------------------------------------------------------------


def test_compare_models_sorts_formats_and_saves(tmp_path: Path) -> None:
    rows = [
        {
            "model": "custom_cnn",
            "test/acc_top1": 0.41,
            "acc_top1_ci_low": 0.39,
            "acc_top1_ci_high": 0.43,
            "macro_f1": 0.40,
            "ece": 0.08,
            "params": 1.2e6,
            "gmacs": 0.3,
            "train_seconds": 600,
            "latency_ms": 4.0,
        },
        {
            "name": "resnet50",
            "acc_top1": 0.82,
            "acc_top1_ci_low": 0.81,
            "acc_top1_ci_high": 0.83,
            "params": 25.6e6,
            "latency_ms": 45.0,
            "gmacs": None,
        },
        {"model": "clip_zero_shot", "acc_top1": None, "params": 151e6},
    ]
    result = compare_models(rows)
    assert result.table["model"].tolist() == ["resnet50", "custom_cnn", "clip_zero_shot"]
    assert np.isnan(result.table.loc[0, "gmacs"])
    assert result.x_axis == "latency_ms"
    assert "82.0 % [81.0, 83.0]" in result.markdown and "| clip_zero_shot" in result.markdown
    paths = save_comparison(result, tmp_path)
    assert paths["plot"].name == "accuracy_vs_latency.png" and paths["plot"].is_file()
    back = pd.read_csv(paths["csv"])
    assert back["model"].tolist() == result.table["model"].tolist()
    assert paths["markdown"].read_text() == result.markdown
    # Without latencies the plot falls back to size.
    no_latency = compare_models([{**r, "latency_ms": None} for r in rows])
    assert no_latency.x_axis == "params"
    assert save_comparison(no_latency, tmp_path / "b")["plot"].name == "accuracy_vs_size.png"
    with pytest.raises(ConfigError, match="twice"):
        compare_models([{"model": "a"}, {"model": "a"}])
    with pytest.raises(ConfigError, match="number"):
        compare_models([{"model": "a", "acc_top1": "high"}])
