"""Fitting the CLIP assets: the zero-shot classifier and the linear probe.

- `fit_clip_zero_shot`: encode the prompts once into a class matrix, score each template alone
  and the ensemble on val (so the gain from ensembling is measured, not assumed), save a bundle.
- `fit_clip_linear_probe`: extract image features once (cached on disk, keyed by model, weights
  and split manifest content), fit a multinomial logistic regression with C picked on val, run the
  k-shot variants, and copy the coefficients into the module's linear head.

Both share the image-feature cache below. Each fit reads as its steps: load, build or fit the
head, write the bundle and tables, record the metadata (the card and metadata keys are built in
`metadata.py`). `fit_zero_shot` and `fit_linear_probe` are the registry fit hooks
(`fit(spec, splits, config, out_dir, context)`): they apply `on_missing_weights` and name the
model card after the spec. The zero-shot scoring is in `zero_shot.py`, the scikit-learn side of
the probe in `probe.py`. This module sits on top of the package: it imports the others and none
of them imports it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from food_assets.ml.artifacts import atomic_path, write_figure, write_parquet
from food_assets.ml.data.dataset import ManifestDataset
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import DataSourceError
from food_assets.ml.models.bundle import FitResult, save_bundle
from food_assets.ml.models.clip.config import ClipConfig, ClipProbeConfig
from food_assets.ml.models.clip.ensemble import ensemble_metadata, ensemble_with_zero_shot
from food_assets.ml.models.clip.loading import LoadedClip, load_clip
from food_assets.ml.models.clip.metadata import (
    common_metadata,
    model_card,
    probe_metadata,
    zero_shot_metadata,
)
from food_assets.ml.models.clip.modules import ClipLinearProbe, ClipZeroShotClassifier
from food_assets.ml.models.clip.probe import ProbeFit, fit_probe, head_parity, kshot_figure
from food_assets.ml.models.clip.text import ClassEmbeddings, save_class_embeddings
from food_assets.ml.models.clip.weights import clip_weights_available
from food_assets.ml.models.clip.zero_shot import (
    score_templates,
    single_template_matrices,
    zero_shot_embeddings,
)
from food_assets.ml.models.registry import FitContext, FitSkipped, ModelSpec

FEATURE_CACHE_VERSION = 1
BUNDLE_DIR = "bundle"
PROBE_SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------------------------
# Image features, extracted once
# --------------------------------------------------------------------------------------------


def feature_cache_key(loaded: LoadedClip, splits: SplitManifest) -> str:
    """Key of the feature cache: (model id, weights identity, preprocess, manifest content)."""
    parts = {
        "version": FEATURE_CACHE_VERSION,
        "model_id": loaded.model_id,
        "model_cfg": loaded.model_cfg,
        "quick_gelu": loaded.quick_gelu,
        "weights": loaded.weights.identity(),
        "preprocess": loaded.preprocess.to_dict(),
        "manifest": splits.digest(),
        "features": "l2-normalised image embeddings",
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


@torch.no_grad()
def extract_features(
    encode: Callable[[torch.Tensor], torch.Tensor],
    frame: pd.DataFrame,
    preprocess: Preprocess,
    *,
    batch_size: int,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Run `encode` (the image tower, normalised) over manifest rows; returns (features, labels)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        ManifestDataset(frame, preprocess, train=False),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    feats: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for x, y in loader:
        feats.append(encode(x.to(device)).float().cpu().numpy())
        labels.append(y.numpy())
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(feats).astype(np.float32), np.concatenate(labels).astype(np.int64)


def split_features(
    encode: Callable[[torch.Tensor], torch.Tensor],
    loaded: LoadedClip,
    splits: SplitManifest,
    split: str,
    cfg: ClipConfig,
    cache_dir: Path | None,
    *,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Features of one split, from the disk cache when there (returns X, y, cache_hit)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    path = None
    if cache_dir is not None:
        path = (
            Path(cache_dir)
            / f"clip-features-{feature_cache_key(loaded, splits)}-{split}.safetensors"
        )
        if path.is_file():
            try:
                t = load_file(str(path))
                return t["features"].numpy(), t["labels"].numpy(), True
            except (SafetensorError, OSError, KeyError):
                pass  # a damaged cache entry is just re-extracted (and overwritten)
    X, y = extract_features(
        encode,
        splits.frame(split),
        loaded.preprocess,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        device=device,
    )
    if path is not None:
        meta = {"model_id": loaded.model_id, "weights": loaded.weights.source, "split": split}
        with atomic_path(path) as tmp:
            save_file(
                {"features": torch.from_numpy(X).contiguous(), "labels": torch.from_numpy(y)},
                str(tmp),
                metadata=meta,
            )
    return X, y, False


def _features(
    encode: Callable[[torch.Tensor], torch.Tensor],
    loaded: LoadedClip,
    splits: SplitManifest,
    names: Sequence[str],
    cfg: ClipConfig,
    cache_dir: Path | None,
    *,
    device: torch.device,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, bool]]:
    """`split_features` for each split in `names`: ({split: (X, y)}, {split: cache hit})."""
    feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cache_hits: dict[str, bool] = {}
    for split in names:
        X, y, hit = split_features(encode, loaded, splits, split, cfg, cache_dir, device=device)
        feats[split], cache_hits[split] = (X, y), hit
    return feats, cache_hits


# --------------------------------------------------------------------------------------------
# Zero-shot
# --------------------------------------------------------------------------------------------


def _build_zero_shot(
    loaded: LoadedClip, names: tuple[str, ...], cfg: ClipConfig, device: torch.device
) -> tuple[ClassEmbeddings, dict[str, torch.Tensor], ClipZeroShotClassifier, float]:
    """The class matrix, one matrix per template, and the classifier on `device`.

    The seconds spent on the ensembled class matrix are returned: it is the only text-tower work
    a reused `cfg.class_embeddings` saves, so the metadata shows what reuse is worth.
    """
    t0 = time.perf_counter()
    emb = zero_shot_embeddings(loaded, names, cfg, device=device)
    text_seconds = time.perf_counter() - t0
    singles = single_template_matrices(loaded, emb, cfg, device=device)
    model = ClipZeroShotClassifier(
        loaded.model.visual,
        emb.matrix,
        logit_scale=float(loaded.model.logit_scale.detach().exp()),
        class_names=names,
    ).eval()
    model.to(device)
    return emb, singles, model, text_seconds


def fit_clip_zero_shot(
    splits: SplitManifest,
    cfg: ClipConfig,
    out_dir: Path,
    *,
    feature_cache_dir: Path | None = None,
    name: str = "clip_zero_shot",
) -> FitResult:
    """Build the zero-shot classifier for the split's class map and score its templates.

    Writes `out_dir/bundle/` (the model), `out_dir/class_embeddings.safetensors` (the class
    matrix with its class order) and `out_dir/template_accuracy.parquet`. `name` is the registry
    entry the model card names (the bundle is rebuilt from it); `fit_zero_shot`, the registry
    hook, passes the spec's name.

    Raises:
        WeightsNotFoundError / ConfigError: no usable weights (see `clip_weights_available`).
        CheckpointError: `cfg.class_embeddings` belongs to another class order or other weights.
    """
    out_dir = Path(out_dir)
    device = cfg.resolved_device()
    loaded = load_clip(cfg)
    names = tuple(splits.class_names)
    emb, singles, model, text_seconds = _build_zero_shot(loaded, names, cfg, device)
    eval_splits = tuple(dict.fromkeys(("val", *cfg.template_eval_splits)))
    feats, cache_hits = _features(
        model.encode_image, loaded, splits, eval_splits, cfg, feature_cache_dir, device=device
    )
    table, metadata = score_templates(feats, emb, singles)

    emb_path = save_class_embeddings(out_dir / "class_embeddings.safetensors", emb)
    table_path = write_parquet(out_dir / "template_accuracy.parquet", table)
    metrics = {k: v for k, v in metadata.items() if k.endswith("/acc_top1")}
    card = model_card(name, "zero_shot", loaded, names, metrics)
    bundle = save_bundle(out_dir / BUNDLE_DIR, model.cpu(), card)
    metadata.update(common_metadata(loaded, cfg))
    metadata.update(
        zero_shot_metadata(emb, table, model, cfg, text_seconds=text_seconds, cache_hits=cache_hits)
    )
    return FitResult(
        bundle_dir=bundle,
        card=card,
        metadata=metadata,
        artifacts={"class_embeddings": emb_path, "template_table": table_path},
    )


# --------------------------------------------------------------------------------------------
# Linear probe
# --------------------------------------------------------------------------------------------


def _fit_head(
    probe: ClipLinearProbe,
    feats: Mapping[str, tuple[np.ndarray, np.ndarray]],
    cfg: ClipProbeConfig,
    names: Sequence[str],
) -> tuple[ProbeFit, float]:
    """Fit the logistic regression and copy it into `probe.head` (moved to the CPU).

    Returns the fit and the largest |torch head - sklearn decision_function| on val: a cheap
    self-check the metadata records, so a wrong copy shows up without a test run.
    """
    _check_probe_data(feats, names)
    fitted = fit_probe(feats, cfg, len(names))
    probe.cpu()
    probe.set_head_from_sklearn(fitted.clf.coef_, fitted.clf.intercept_)
    return fitted, head_parity(probe.head, fitted.clf, feats["val"][0])


def fit_clip_linear_probe(
    splits: SplitManifest,
    cfg: ClipProbeConfig,
    out_dir: Path,
    *,
    feature_cache_dir: Path | None,
    name: str = "clip_linear_probe",
) -> FitResult:
    """Logistic regression on frozen CLIP image features, full data and k-shot.

    Writes `out_dir/bundle/` (image tower + linear head), `out_dir/kshot.parquet` and
    `out_dir/kshot.png`. Features live in `feature_cache_dir`; a second call with the same model,
    weights and splits reads them instead of running the image tower. `name` is the registry
    entry the model card names; `fit_linear_probe`, the registry hook, passes the spec's name.

    Raises:
        WeightsNotFoundError / ConfigError: no usable weights.
        DataSourceError: a class has no training image.
    """
    out_dir = Path(out_dir)
    device = cfg.resolved_device()
    loaded = load_clip(cfg)
    names = tuple(splits.class_names)
    probe = ClipLinearProbe(loaded.model.visual, len(names), names).eval().to(device)

    t0 = time.perf_counter()
    feats, cache_hits = _features(
        probe.encode_image, loaded, splits, PROBE_SPLITS, cfg, feature_cache_dir, device=device
    )
    feature_seconds = time.perf_counter() - t0
    fitted, parity = _fit_head(probe, feats, cfg, names)
    ensemble = ensemble_with_zero_shot(probe, loaded, names, cfg, feats, device)

    kshot_path = write_parquet(out_dir / "kshot.parquet", fitted.kshot)
    plot_path = write_figure(out_dir / "kshot.png", kshot_figure(fitted.kshot, loaded.model_id))
    metrics = {"val/acc_top1": fitted.val_acc}
    if ensemble is not None and cfg.zero_shot_ensemble == "bundle":
        metrics["val/acc_top1"] = ensemble.scores["val/acc_top1_ensemble"]
    card = model_card(name, "linear_probe", loaded, names, metrics)
    bundle = save_bundle(out_dir / BUNDLE_DIR, probe, card)
    metadata = common_metadata(loaded, cfg)
    metadata.update(
        probe_metadata(
            fitted,
            feats,
            cache_hits=cache_hits,
            cache_key=feature_cache_key(loaded, splits),
            feature_seconds=feature_seconds,
            parity=parity,
        )
    )
    if ensemble is not None:
        metadata.update(ensemble_metadata(ensemble, cfg.zero_shot_ensemble))
    return FitResult(
        bundle_dir=bundle,
        card=card,
        metadata=metadata,
        plots={"kshot_curve": plot_path},
        artifacts={"kshot_table": kshot_path},
    )


# --------------------------------------------------------------------------------------------
# Registry fit hooks: fit(spec, splits, config, out_dir, context) -> FitResult
# --------------------------------------------------------------------------------------------


def _skip_without_weights(cfg: ClipConfig) -> None:
    """`on_missing_weights: skip`: decline before loading anything when no weights are here."""
    if cfg.on_missing_weights == "skip":
        ok, reason = clip_weights_available(cfg)
        if not ok:
            raise FitSkipped(reason)


def fit_zero_shot(
    spec: ModelSpec,
    splits: SplitManifest,
    config: ClipConfig,
    out_dir: Path,
    context: FitContext | None = None,
) -> FitResult:
    """Registry hook of the zero-shot entries: `fit_clip_zero_shot` under the spec's name.

    Raises:
        FitSkipped: no weights on this machine and `on_missing_weights: skip`.
    """
    context = context or FitContext()
    _skip_without_weights(config)
    return fit_clip_zero_shot(
        splits, config, out_dir, feature_cache_dir=context.feature_cache_dir, name=spec.name
    )


def fit_linear_probe(
    spec: ModelSpec,
    splits: SplitManifest,
    config: ClipProbeConfig,
    out_dir: Path,
    context: FitContext | None = None,
) -> FitResult:
    """Registry hook of the linear-probe entries: `fit_clip_linear_probe` under the spec's name.

    Raises:
        FitSkipped: no weights on this machine and `on_missing_weights: skip`.
    """
    context = context or FitContext()
    _skip_without_weights(config)
    return fit_clip_linear_probe(
        splits, config, out_dir, feature_cache_dir=context.feature_cache_dir, name=spec.name
    )


def _check_probe_data(
    feats: Mapping[str, tuple[np.ndarray, np.ndarray]], names: Sequence[str]
) -> None:
    """Every class needs a training image, and C is picked on val: it must not be empty."""
    counts = np.bincount(feats["train"][1], minlength=len(names))
    n_val = len(feats["val"][1])
    if counts.min() == 0 or not n_val:
        empty = [names[i] for i in np.flatnonzero(counts == 0)]
        raise DataSourceError(
            f"the linear probe needs training images of every class and a val split; classes "
            f"with no training image: {empty or 'none'}, val images: {n_val}. Re-make the "
            "splits."
        )
