"""`evaluate_bundle`: a trained-model bundle and its split manifest in, a full evaluation out.

This is the one function the `evaluation_<name>` assets call: it checks the class maps, loads
the bundle, predicts val and test (`predict_logits`) and evaluates (`evaluate_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.evaluation.predict import predict_logits
from food_assets.ml.evaluation.report import EvaluationResult, check_class_maps, evaluate_model
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

    Raises:
        CheckpointError: the bundle is unreadable or its class map differs from the split's.
        ConfigError: empty splits or a model that does not return `(N, C)` logits.
    """
    split_classes = list(splits.class_names)
    if model_classes is not None:
        check_class_maps(list(model_classes), split_classes)
    net, card = load_bundle(bundle_dir)
    if model_classes is None:
        check_class_maps(list(card.class_names), split_classes)
    device = resolve_device(device)
    net = net.to(device)
    preds = {
        split: predict_logits(
            net,
            splits.frame(split),
            card.preprocess,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
        )
        for split in ("val", "test")
    }
    return evaluate_model(
        preds["test"],
        preds["val"],
        split_classes,
        out_dir,
        seed=seed,
        n_bootstrap=n_bootstrap,
    )
