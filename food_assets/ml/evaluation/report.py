"""`evaluate_model`: predictions in, every metric, table and figure of one model out.

`evaluate_bundle` (`evaluate.py`, what the `evaluation_<name>` assets call) predicts, then calls
this. It computes (pure functions in `metrics` / `calibration`), then writes (through
`food_assets.ml.artifacts`, atomically).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from food_assets.ml.artifacts import write_figure, write_json, write_parquet, write_text
from food_assets.ml.errors import CheckpointError, ConfigError
from food_assets.ml.evaluation import metrics as M
from food_assets.ml.evaluation import plots
from food_assets.ml.evaluation.calibration import apply_temperature, fit_temperature
from food_assets.ml.evaluation.predict import Predictions

TOP_K = 5
WORST_CLASSES = 6


@dataclass
class EvaluationResult:
    """Everything `evaluate_model` computed and where it wrote it.

    Attributes:
        summary: flat `split/metric` -> number (the content of metrics.json; NaN stays NaN here
            and is written as null).
        per_class: one row per class (see `docs/evaluation.md`).
        confused_pairs: the most frequent (true, predicted) errors.
        hardest: the highest-loss test images.
        predictions: the per-image table written to predictions.parquet.
        plots: figure name -> PNG path.
        files: file name (without extension) -> path, for every table and JSON written.
        temperature: fitted on val; 1.0 when no val split was given.
    """

    summary: dict[str, float]
    per_class: pd.DataFrame
    confused_pairs: pd.DataFrame
    hardest: pd.DataFrame
    predictions: pd.DataFrame
    plots: dict[str, Path] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    temperature: float = 1.0


def check_class_maps(model_classes: Sequence[str], split_classes: Sequence[str]) -> None:
    """Refuse to evaluate a model on a split whose class index map differs from its own.

    Index `i` must mean the same class for the model's output and the split's `label_idx`:
    same names, same order. Otherwise every metric would be silently wrong.

    Raises:
        CheckpointError: naming both lists' sizes, the first differing positions and the names
            found in only one of them.
    """
    model_classes, split_classes = list(model_classes), list(split_classes)
    if model_classes == split_classes:
        return
    diffs = [
        f"#{i}: model {m!r} vs split {s!r}"
        for i, (m, s) in enumerate(zip(model_classes, split_classes, strict=False))
        if m != s
    ][:5]
    only_model = sorted(set(model_classes) - set(split_classes))[:5]
    only_split = sorted(set(split_classes) - set(model_classes))[:5]
    parts = [
        f"The model's class map ({len(model_classes)} classes: {_preview(model_classes)}) "
        f"differs from the split's ({len(split_classes)} classes: {_preview(split_classes)})."
    ]
    if diffs:
        parts.append("First differences: " + "; ".join(diffs) + ".")
    if only_model:
        parts.append(f"Only in the model: {only_model}.")
    if only_split:
        parts.append(f"Only in the split: {only_split}.")
    if not (diffs or only_model or only_split):
        parts.append("One list is a prefix of the other.")
    parts.append(
        "Evaluate the model on the split manifest it was trained on, or retrain it on this one."
    )
    raise CheckpointError(" ".join(parts))


def _preview(names: Sequence[str], n: int = 4) -> str:
    head = ", ".join(repr(x) for x in names[:n])
    return f"[{head}{', ...' if len(names) > n else ''}]"


def _check_sizes(preds: Predictions, class_names: Sequence[str], split: str) -> None:
    if preds.num_classes != len(class_names):
        raise ConfigError(
            f"The {split} predictions have {preds.num_classes} logit columns but class_names has "
            f"{len(class_names)} names. Pass the class names the model was trained with "
            "(its card's class_names) and a model built for that many classes."
        )
    if len(preds) == 0:
        raise ConfigError(f"The {split} predictions are empty; the {split} split has no images.")


def _split_metrics(
    logits: np.ndarray,
    cal_logits: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    n_bootstrap: int,
) -> tuple[dict[str, float], pd.DataFrame, np.ndarray]:
    """Metrics of one split before and after temperature scaling; `(summary, per_class, cm)`."""
    c = logits.shape[1]
    probs, cal_probs = M.softmax(logits), M.softmax(cal_logits)
    # Argmax and top-k order do not depend on T > 0: rank once, on the raw logits.
    preds = M.top_k_indices(logits, 1)[:, 0]
    out: dict[str, float] = {"n": len(labels)}
    out.update(
        M.accuracy_with_ci(logits, labels, ks=(1, TOP_K), n_resamples=n_bootstrap, seed=seed)
    )
    per_class, averages = M.classification_metrics(labels, preds, c)
    out.update(averages)
    raw_auc = M.one_vs_rest_auc(labels, probs)
    cal_auc = M.one_vs_rest_auc(labels, cal_probs)
    per_class["roc_auc"] = raw_auc["roc_auc"]
    per_class["pr_auc"] = raw_auc["pr_auc"]
    per_class["roc_auc_calibrated"] = cal_auc["roc_auc"]
    per_class["pr_auc_calibrated"] = cal_auc["pr_auc"]
    per_class["note"] = raw_auc["note"]
    out["macro_roc_auc"] = _nanmean(raw_auc["roc_auc"])
    out["macro_pr_auc"] = _nanmean(raw_auc["pr_auc"])
    out["macro_roc_auc_calibrated"] = _nanmean(cal_auc["roc_auc"])
    out["macro_pr_auc_calibrated"] = _nanmean(cal_auc["pr_auc"])
    out["ece"] = M.expected_calibration_error(probs, labels)
    out["ece_calibrated"] = M.expected_calibration_error(cal_probs, labels)
    out["nll"] = M.negative_log_likelihood(logits, labels)
    out["nll_calibrated"] = M.negative_log_likelihood(cal_logits, labels)
    out["classes_absent"] = int((per_class["support"] == 0).sum())
    return out, per_class, M.confusion_matrix(labels, preds, c)


def _nanmean(values: pd.Series) -> float:
    arr = values.to_numpy(dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else math.nan


def predictions_table(
    preds: Predictions, cal_logits: np.ndarray, class_names: Sequence[str], *, k: int = TOP_K
) -> pd.DataFrame:
    """Per-image table: path, true class, top-k classes and calibrated probabilities.

    Columns: `path`, `true_idx`, `true_class`, `top{j}_idx`, `top{j}_class`, `top{j}_prob`
    (j = 1..k, calibrated), `top1_prob_raw` (before temperature scaling), `correct`, `loss`
    (calibrated cross-entropy).
    """
    top = M.top_k_indices(preds.logits, k)
    cal_probs = M.softmax(cal_logits)
    raw_probs = M.softmax(preds.logits)
    rows = np.arange(len(preds))
    names = np.asarray(class_names, dtype=object)
    data: dict[str, Any] = {
        "path": preds.paths,
        "true_idx": preds.labels,
        "true_class": names[preds.labels],
    }
    for j in range(top.shape[1]):
        data[f"top{j + 1}_idx"] = top[:, j].astype(np.int64)
        data[f"top{j + 1}_class"] = names[top[:, j]]
        data[f"top{j + 1}_prob"] = cal_probs[rows, top[:, j]]
    data["top1_prob_raw"] = raw_probs[rows, top[:, 0]]
    data["correct"] = top[:, 0] == preds.labels
    data["loss"] = M.per_sample_loss(cal_logits, preds.labels)
    return pd.DataFrame(data)


def evaluate_model(
    test: Predictions,
    val: Predictions | None,
    class_names: Sequence[str],
    out_dir: Path,
    *,
    seed: int = 0,
    n_bootstrap: int = 1000,
    hardest_top: int = 24,
    confused_top: int = 20,
) -> EvaluationResult:
    """Evaluate one model on test, calibrated on val, and write every artifact to `out_dir`.

    Steps: fit the temperature on val (T = 1 without val); compute accuracy (top-1, top-5 with
    bootstrap CIs), per-class and averaged precision/recall/F1, one-vs-rest ROC/PR AUC, ECE and
    NLL on test before and after scaling; write the tables, figures and `metrics.json`.

    Args:
        test: test-split predictions (raw logits).
        val: validation-split predictions used only to fit the temperature; None skips it.
        class_names: index -> name, the model's class map (check it with `check_class_maps`).
        out_dir: folder for the artifacts (created if needed; files are replaced atomically).
        seed: seeds the bootstrap; same inputs and seed give a bit-identical metrics.json.
        n_bootstrap: bootstrap resamples for the accuracy intervals.
        hardest_top: rows in the hardest-examples table (the grid shows up to 16).
        confused_top: rows in the most-confused-pairs table.

    Returns:
        `EvaluationResult`; `files` has keys `metrics`, `predictions`, `per_class_csv`,
        `per_class_parquet`, `confused_pairs`, `hardest`; `plots` has `confusion_matrix`,
        `roc_pr_worst`, `reliability`, `hardest_examples`.

    Raises:
        ConfigError: the predictions' class count differs from `class_names`, or empty splits.
    """
    out_dir = Path(out_dir)
    class_names = [str(c) for c in class_names]
    _check_inputs(test, val, class_names, n_bootstrap)
    temperature = fit_temperature(val.logits, val.labels) if val is not None else 1.0
    cal_logits = apply_temperature(test.logits, temperature)
    summary, per_class, cm = _summary(
        test, val, cal_logits, temperature, class_names, seed=seed, n_bootstrap=n_bootstrap
    )
    confused = M.most_confused_pairs(cm, class_names, top=confused_top)
    hardest = M.hardest_examples(
        cal_logits, test.labels, test.paths, class_names, top=hardest_top, by="loss"
    )
    table = predictions_table(test, cal_logits, class_names)
    files = _write_tables(out_dir, table, per_class, confused, hardest)
    fitted = temperature if val is not None else None  # the reliability plot shows T if fitted
    builders = _figure_builders(
        test, cal_logits, class_names, cm, per_class, hardest, summary, fitted
    )
    plot_paths = _write_figures(out_dir, builders)
    # Written last: its presence means the whole evaluation finished.
    files["metrics"] = write_json(out_dir / "metrics.json", _json_safe(summary))
    return EvaluationResult(
        summary=summary,
        per_class=per_class,
        confused_pairs=confused,
        hardest=hardest,
        predictions=table,
        plots=plot_paths,
        files=files,
        temperature=float(temperature),
    )


def _check_inputs(
    test: Predictions, val: Predictions | None, class_names: Sequence[str], n_bootstrap: int
) -> None:
    _check_sizes(test, class_names, "test")
    if val is not None:
        _check_sizes(val, class_names, "val")
    if n_bootstrap < 1:
        raise ConfigError(f"n_bootstrap must be >= 1, got {n_bootstrap}")


def _summary(
    test: Predictions,
    val: Predictions | None,
    cal_logits: np.ndarray,
    temperature: float,
    class_names: list[str],
    *,
    seed: int,
    n_bootstrap: int,
) -> tuple[dict[str, float], pd.DataFrame, np.ndarray]:
    """The flat `split/metric` summary (metrics.json, in this key order), the test split's
    per-class table (with a `class_name` column) and its confusion matrix."""
    test_summary, per_class, cm = _split_metrics(
        test.logits, cal_logits, test.labels, seed=seed, n_bootstrap=n_bootstrap
    )
    per_class.insert(1, "class_name", class_names)
    summary: dict[str, float] = {f"test/{k}": v for k, v in test_summary.items()}
    summary["temperature"] = float(temperature)
    summary["test/num_classes"] = len(class_names)
    summary["bootstrap/resamples"] = int(n_bootstrap)
    summary["bootstrap/seed"] = int(seed)
    if val is not None:
        summary.update(_val_summary(val, temperature))
    return summary, per_class, cm


def _val_summary(val: Predictions, temperature: float) -> dict[str, float]:
    """In-sample for T (it was fitted here): shows the fit worked, not generalisation."""
    val_cal = apply_temperature(val.logits, temperature)
    return {
        "val/n": len(val),
        "val/acc_top1": M.top_k_accuracy(val.logits, val.labels, 1),
        "val/nll": M.negative_log_likelihood(val.logits, val.labels),
        "val/nll_calibrated": M.negative_log_likelihood(val_cal, val.labels),
        "val/ece": M.expected_calibration_error(M.softmax(val.logits), val.labels),
        "val/ece_calibrated": M.expected_calibration_error(M.softmax(val_cal), val.labels),
    }


def _write_tables(
    out_dir: Path,
    table: pd.DataFrame,
    per_class: pd.DataFrame,
    confused: pd.DataFrame,
    hardest: pd.DataFrame,
) -> dict[str, Path]:
    return {
        "predictions": write_parquet(out_dir / "predictions.parquet", table),
        "per_class_csv": _write_csv(out_dir / "per_class.csv", per_class),
        "per_class_parquet": write_parquet(out_dir / "per_class.parquet", per_class),
        "confused_pairs": _write_csv(out_dir / "confused_pairs.csv", confused),
        "hardest": _write_csv(out_dir / "hardest.csv", hardest),
    }


def _write_figures(
    out_dir: Path, builders: list[tuple[str, Callable[[], Figure]]]
) -> dict[str, Path]:
    # One figure alive at a time: built, saved and closed before the next (101-class figures
    # are large).
    return {name: write_figure(out_dir / f"{name}.png", build()) for name, build in builders}


def _figure_builders(
    test: Predictions,
    cal_logits: np.ndarray,
    class_names: list[str],
    cm: np.ndarray,
    per_class: pd.DataFrame,
    hardest: pd.DataFrame,
    summary: dict[str, float],
    temperature: float | None,
) -> list[tuple[str, Callable[[], Figure]]]:
    """(name, zero-argument builder) for each figure, in the order they are written."""
    cal_probs = M.softmax(cal_logits)
    # Worst classes by (calibrated) ROC AUC; ties and NaN handled by a stable sort on index.
    ranked = per_class.dropna(subset=["roc_auc_calibrated"]).sort_values(
        ["roc_auc_calibrated", "class_idx"], kind="mergesort"
    )
    worst = ranked["class_idx"].head(WORST_CLASSES).tolist()
    curves = M.roc_pr_curves(test.labels, cal_probs, worst)
    roc = dict(zip(per_class["class_idx"], per_class["roc_auc_calibrated"], strict=True))
    pr = dict(zip(per_class["class_idx"], per_class["pr_auc_calibrated"], strict=True))

    def reliability():
        before = M.reliability_bins(M.softmax(test.logits), test.labels)
        if temperature is None:
            return plots.reliability_figure(before, summary["test/ece"])
        after = M.reliability_bins(cal_probs, test.labels)
        return plots.reliability_figure(
            before, summary["test/ece"], after, summary["test/ece_calibrated"], temperature
        )

    return [
        ("confusion_matrix", lambda: plots.confusion_matrix_figure(cm, class_names)),
        ("roc_pr_worst", lambda: plots.roc_pr_figure(curves, class_names, roc, pr)),
        ("reliability", reliability),
        ("hardest_examples", lambda: plots.hardest_grid(hardest)),
    ]


def _write_csv(path: Path, frame: pd.DataFrame) -> Path:
    return write_text(path, frame.to_csv(index=False))


def _json_safe(summary: dict[str, float]) -> dict[str, float | None]:
    # NaN is not JSON; null is (an AUC with no positive examples, for instance).
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
