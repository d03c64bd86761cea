"""`evaluate_bundle`: a trained-model bundle and its split manifest in, a full evaluation out.

This is the one function the `evaluation_<name>` assets call: it checks the class maps, loads
the bundle, predicts val and test (`predict_logits`) and evaluates (`evaluate_model`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from food_assets.ml.artifacts import write_json
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.evaluation.metrics import accuracy_with_ci
from food_assets.ml.evaluation.predict import Predictions, predict_logits
from food_assets.ml.evaluation.report import EvaluationResult, check_class_maps, evaluate_model
from food_assets.ml.evaluation.tta import (
    VIEWS,
    TestTimeAugmentation,
    check_tta,
    tta_preprocess,
)
from food_assets.ml.models.bundle import load_bundle


def resolve_device(name: str) -> str:
    """`auto` is CUDA when there is one, else the CPU; any other name is kept as it is."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def evaluate_bundle(
    bundle_dir: Path,
    splits: SplitManifest,
    out_dir: Path,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "auto",
    seed: int = 0,
    n_bootstrap: int = 1000,
    model_classes: Sequence[str] | None = None,
    tta: str = "none",
    precision: str = "auto",
) -> EvaluationResult:
    """Evaluate the bundle in `bundle_dir` on `splits`' test split, calibrated on its val split.

    Args:
        bundle_dir: a trained-model bundle (`save_bundle`).
        splits: the split manifest the model was trained on (same class map).
        out_dir: folder for the evaluation's artifacts (see `evaluate_model`).
        batch_size: images per forward pass.
        num_workers: DataLoader worker processes.
        device: `auto` (CUDA when available), `cpu`, `cuda`, `cuda:1`, ...
        seed: seeds the bootstrap.
        n_bootstrap: bootstrap resamples for the accuracy intervals.
        model_classes: the model's class map as its producer recorded it; checked against the
            split's before any weights are read. None: the bundle card's, checked after loading.
        precision: `auto` (bf16 autocast where the device has native bf16, else fp32), `fp32`
            or `bf16` (`ml/training/precision.py`).
        tta: `none`, `flip` or `flip_crops` (`evaluation/tta.py`). The headline figures stay
            the plain model's (what ONNX, `predict` and the demo serve); the TTA figure is added
            beside them: `test/acc_top1_tta` with its bootstrap interval, `tta/views`,
            `tta/seconds`, `tta/plain_seconds` and `tta/time_ratio` (test split, same run).

    Raises:
        CheckpointError: the bundle is unreadable or its class map differs from the split's.
        ConfigError: empty splits or a model that does not return `(N, C)` logits.
    """
    check_tta(tta)
    split_classes = list(splits.class_names)
    if model_classes is not None:
        check_class_maps(list(model_classes), split_classes)
    net, card = load_bundle(bundle_dir)
    if model_classes is None:
        check_class_maps(list(card.class_names), split_classes)
    device = resolve_device(device)
    net = net.to(device)
    seconds: dict[str, float] = {}

    def predict(model, split: str, preprocess):
        t0 = time.perf_counter()
        out = predict_logits(
            model,
            splits.frame(split),
            preprocess,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            precision=precision,
        )
        seconds[split] = time.perf_counter() - t0
        return out

    preds = {split: predict(net, split, card.preprocess) for split in ("val", "test")}
    result = evaluate_model(
        preds["test"],
        preds["val"],
        split_classes,
        out_dir,
        seed=seed,
        n_bootstrap=n_bootstrap,
    )
    if tta != "none":
        plain_seconds = seconds["test"]
        wrapped = TestTimeAugmentation(net, tta, crop_size=card.preprocess.input_size)
        test_tta = predict(wrapped, "test", tta_preprocess(card.preprocess, tta))
        _add_tta_figures(result, test_tta, tta, seconds["test"], plain_seconds, seed, n_bootstrap)
        write_json(Path(out_dir) / "metrics.json", _json_safe(result.summary))
    return result


def _add_tta_figures(
    result: EvaluationResult,
    test_tta: Predictions,
    mode: str,
    tta_seconds: float,
    plain_seconds: float,
    seed: int,
    n_bootstrap: int,
) -> None:
    """The TTA test accuracy (same bootstrap seed as the plain one) and its cost, added to
    `result.summary` beside the plain figures."""
    acc = accuracy_with_ci(
        test_tta.logits, test_tta.labels, ks=(1,), n_resamples=n_bootstrap, seed=seed
    )
    result.summary.update(
        {
            "test/acc_top1_tta": acc["acc_top1"],
            "test/acc_top1_tta_ci_low": acc["acc_top1_ci_low"],
            "test/acc_top1_tta_ci_high": acc["acc_top1_ci_high"],
            "tta/views": VIEWS[mode],
            "tta/seconds": tta_seconds,
            "tta/plain_seconds": plain_seconds,
            "tta/time_ratio": tta_seconds / plain_seconds if plain_seconds > 0 else float("nan"),
        }
    )


def _json_safe(summary: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if v != v else v) for k, v in summary.items()}
