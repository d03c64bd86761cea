"""Fitting the CLIP assets: the zero-shot classifier and the linear probe.

- `fit_clip_zero_shot`: encode the prompts once into a class matrix, score each template alone
  and the ensemble on val (so the gain from ensembling is measured, not assumed), save a bundle.
- `fit_clip_linear_probe`: extract image features once (cached on disk, keyed by model, weights
  and split manifest content), fit a multinomial logistic regression with C picked on val, run the
  k-shot variants, and copy the coefficients into the module's linear head.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from food_assets.ml.artifacts import atomic_path, write_figure, write_parquet
from food_assets.ml.data.dataset import ManifestDataset
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import CheckpointError, DataSourceError
from food_assets.ml.models.bundle import FitResult, ModelCard, save_bundle
from food_assets.ml.models.clip import (
    ClipConfig,
    ClipLinearProbe,
    ClipZeroShotClassifier,
    LoadedClip,
    build_class_embeddings,
    check_class_order,
    load_class_embeddings,
    load_clip,
    save_class_embeddings,
)

FEATURE_CACHE_VERSION = 1
BUNDLE_DIR = "bundle"


# --------------------------------------------------------------------------------------------
# Image features, extracted once
# --------------------------------------------------------------------------------------------


def manifest_digest(splits: SplitManifest) -> str:
    """Content hash of a split manifest: class map + (split, path, sha256, label) of every row.

    Hashing the rows rather than the Parquet bytes keeps the key stable when the same splits are
    rewritten, and changes it when any image, label or split assignment changes.
    """
    df = splits.frame()
    cols = [c for c in ("split", "path", "sha256", "label_idx") if c in df.columns]
    rows = df[cols].sort_values(["split", "path"], kind="stable")
    h = hashlib.sha256(json.dumps(list(splits.class_names)).encode())
    h.update(rows.to_csv(index=False).encode())
    return h.hexdigest()


def feature_cache_key(loaded: LoadedClip, splits: SplitManifest) -> str:
    """Key of the feature cache: (model id, weights identity, preprocess, manifest content)."""
    parts = {
        "version": FEATURE_CACHE_VERSION,
        "model_id": loaded.model_id,
        "model_cfg": loaded.model_cfg,
        "quick_gelu": loaded.quick_gelu,
        "weights": loaded.weights.identity(),
        "preprocess": loaded.preprocess.to_dict(),
        "manifest": manifest_digest(splits),
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


def _accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean()) if len(y) else float("nan")


# --------------------------------------------------------------------------------------------
# Zero-shot
# --------------------------------------------------------------------------------------------


def fit_clip_zero_shot(
    splits: SplitManifest,
    cfg: ClipConfig,
    out_dir: Path,
    *,
    feature_cache_dir: Path | None = None,
) -> FitResult:
    """Build the zero-shot classifier for the split's class map and score its templates.

    Writes `out_dir/bundle/` (the model), `out_dir/class_embeddings.safetensors` (the class
    matrix with its class order) and `out_dir/template_accuracy.parquet`.

    Raises:
        WeightsNotFoundError / ConfigError: no usable weights (see `clip_weights_available`).
        CheckpointError: `cfg.class_embeddings` belongs to another class order or other weights.
    """
    out_dir = Path(out_dir)
    device = cfg.resolved_device()
    loaded = load_clip(cfg)
    names = tuple(splits.class_names)

    t0 = time.perf_counter()
    if cfg.class_embeddings:
        emb = load_class_embeddings(cfg.class_embeddings)
        check_class_order(
            emb.class_names, names, what=f"the class-embedding file {cfg.class_embeddings}"
        )
        if emb.weights_identity != loaded.weights.identity():
            raise CheckpointError(
                f"{cfg.class_embeddings} was encoded with other CLIP weights "
                f"({emb.weights_identity[:23]}, not {loaded.weights.identity()[:23]}); drop the "
                "`class_embeddings` setting to re-encode the prompts"
            )
        templates = emb.templates
    else:
        templates = cfg.templates()
        emb = build_class_embeddings(
            loaded, names, templates, overrides=cfg.class_name_overrides, device=device
        )
    text_seconds = time.perf_counter() - t0

    # One matrix per template, only to show what each contributes; the model keeps the ensemble.
    singles: dict[str, torch.Tensor] = {}
    if len(templates) > 1:
        for t in templates:
            singles[t] = build_class_embeddings(
                loaded, names, [t], overrides=cfg.class_name_overrides, device=device
            ).matrix

    model = ClipZeroShotClassifier(
        loaded.model.visual,
        emb.matrix,
        logit_scale=float(loaded.model.logit_scale.detach().exp()),
        class_names=names,
    ).eval()
    model.to(device)

    rows: list[dict[str, Any]] = []
    metadata: dict[str, Any] = {}
    cache_hits: dict[str, bool] = {}
    eval_splits = tuple(dict.fromkeys(("val", *cfg.template_eval_splits)))
    for split in eval_splits:
        X, y, hit = split_features(
            model.encode_image, loaded, splits, split, cfg, feature_cache_dir, device=device
        )
        cache_hits[split] = hit
        if not len(y):
            continue
        feats = torch.from_numpy(X)
        for t, m in singles.items():
            rows.append(
                {
                    "split": split,
                    "prompts": t,
                    "acc_top1": _accuracy((feats @ m.T).argmax(1).numpy(), y),
                }
            )
        ens = _accuracy((feats @ emb.matrix.T).argmax(1).numpy(), y)
        rows.append({"split": split, "prompts": f"ensemble of {len(templates)}", "acc_top1": ens})
        metadata[f"{split}/acc_top1"] = ens
        if singles:
            single = [
                r["acc_top1"] for r in rows if r["split"] == split and r["prompts"] in singles
            ]
            metadata[f"{split}/acc_top1_best_single_template"] = max(single)
            metadata[f"{split}/acc_top1_mean_single_template"] = float(np.mean(single))
            metadata[f"{split}/ensemble_gain_over_best_single"] = ens - max(single)
    table = pd.DataFrame(rows, columns=["split", "prompts", "acc_top1"])

    emb_path = save_class_embeddings(out_dir / "class_embeddings.safetensors", emb)
    table_path = write_parquet(out_dir / "template_accuracy.parquet", table)
    card = ModelCard(
        name="clip_zero_shot",
        class_names=list(names),
        preprocess=loaded.preprocess,
        build_kwargs={**loaded.build_kwargs(), "class_names": list(names)},
        mode="zero_shot",
        weights_source=loaded.weights.source,
        metrics={k: v for k, v in metadata.items() if k.endswith("/acc_top1")},
    )
    bundle = save_bundle(out_dir / BUNDLE_DIR, model.cpu(), card)
    metadata.update(_common_metadata(loaded, cfg))
    metadata.update(
        {
            "templates": list(templates),
            "prompt_names": list(emb.prompt_names),
            "template_table": table.to_dict("records"),
            "logit_scale": float(model.logit_scale),
            "text_encode_seconds": round(text_seconds, 3),
            "class_embeddings_reused": bool(cfg.class_embeddings),
            "feature_cache_hit": cache_hits,
        }
    )
    return FitResult(
        bundle_dir=bundle,
        card=card,
        metadata=metadata,
        artifacts={"class_embeddings": emb_path, "template_table": table_path},
    )


def _common_metadata(loaded: LoadedClip, cfg: ClipConfig) -> dict[str, Any]:
    return {
        "model_id": loaded.model_id,
        "arch": loaded.arch,
        "pretrained": loaded.weights.tag or "",
        "checkpoint": str(loaded.weights.checkpoint or ""),
        "weights_source": loaded.weights.source,
        "weights_identity": loaded.weights.identity(),
        "quick_gelu": loaded.quick_gelu,
        "preprocess": loaded.preprocess.to_dict(),
        "open_clip_resize_mode": loaded.resize_mode,
        "params_image_tower": int(sum(p.numel() for p in loaded.model.visual.parameters())),
    }


# --------------------------------------------------------------------------------------------
# Linear probe
# --------------------------------------------------------------------------------------------


def fit_logreg(
    X: np.ndarray,
    y: np.ndarray,
    Xv: np.ndarray,
    yv: np.ndarray,
    *,
    c_grid: Sequence[float],
    max_iter: int,
    seed: int,
) -> tuple[Any, float, list[dict[str, Any]]]:
    """Multinomial L2 logistic regression with C chosen on val accuracy (ties: smaller C).

    The grid is walked from strong to weak regularisation with warm starts, which saves most
    L-BFGS iterations on Food-101-sized feature sets.

    Returns:
        (fitted LogisticRegression at the best C, best C, one row per C)
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=max_iter, random_state=seed, warm_start=True)
    best: Any = None
    best_c, best_acc = float("nan"), -1.0
    rows = []
    for c in sorted(float(v) for v in c_grid):
        clf.set_params(C=c)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(X, y)
        converged = True
        for w in caught:  # keep every other warning visible
            if issubclass(w.category, ConvergenceWarning):
                converged = False
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        acc = _accuracy(clf.predict(Xv), yv)
        rows.append({"C": c, "val_acc_top1": acc, "converged": converged})
        if acc > best_acc:
            best, best_c, best_acc = copy.deepcopy(clf), c, acc
    return best, best_c, rows


def kshot_indices(y: np.ndarray, k: int, num_classes: int, seed: int) -> np.ndarray:
    """k train rows per class, seeded per (seed, k); every class must have k rows."""
    rng = np.random.default_rng([seed, k])
    picked = [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c in range(num_classes)]
    return np.sort(np.concatenate(picked))


def fit_clip_linear_probe(
    splits: SplitManifest,
    cfg: ClipConfig,
    out_dir: Path,
    *,
    feature_cache_dir: Path,
) -> FitResult:
    """Logistic regression on frozen CLIP image features, full data and k-shot.

    Writes `out_dir/bundle/` (image tower + linear head), `out_dir/kshot.parquet` and
    `out_dir/kshot.png`. Features live in `feature_cache_dir`; a second call with the same model,
    weights and splits reads them instead of running the image tower.

    Raises:
        WeightsNotFoundError / ConfigError: no usable weights.
        DataSourceError: a class has no training image.
    """
    out_dir = Path(out_dir)
    device = cfg.resolved_device()
    loaded = load_clip(cfg)
    names = tuple(splits.class_names)
    n_cls = len(names)
    probe = ClipLinearProbe(loaded.model.visual, n_cls, names).eval().to(device)

    t0 = time.perf_counter()
    feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cache_hits: dict[str, bool] = {}
    for split in ("train", "val", "test"):
        X, y, hit = split_features(
            probe.encode_image, loaded, splits, split, cfg, feature_cache_dir, device=device
        )
        feats[split], cache_hits[split] = (X, y), hit
    feature_seconds = time.perf_counter() - t0
    (Xtr, ytr), (Xva, yva), (Xte, yte) = feats["train"], feats["val"], feats["test"]
    counts = np.bincount(ytr, minlength=n_cls)
    if counts.min() == 0 or not len(yva):
        empty = [names[i] for i in np.flatnonzero(counts == 0)]
        raise DataSourceError(
            f"the linear probe needs training images of every class and a val split; classes "
            f"with no training image: {empty or 'none'}, val images: {len(yva)}. Re-make the "
            "splits."
        )

    t0 = time.perf_counter()
    clf, best_c, c_rows = fit_logreg(
        Xtr, ytr, Xva, yva, c_grid=cfg.c_grid, max_iter=cfg.max_iter, seed=cfg.seed
    )
    fit_seconds = time.perf_counter() - t0
    val_acc = _accuracy(clf.predict(Xva), yva)
    test_acc = _accuracy(clf.predict(Xte), yte) if len(yte) else float("nan")

    kshot_rows = []
    for k in sorted(set(int(k) for k in cfg.k_shots)):
        if k > counts.min():
            continue  # not enough images in the smallest class for this k
        idx = kshot_indices(ytr, k, n_cls, cfg.seed)
        k_clf, k_c, _ = fit_logreg(
            Xtr[idx], ytr[idx], Xva, yva, c_grid=cfg.c_grid, max_iter=cfg.max_iter, seed=cfg.seed
        )
        kshot_rows.append(
            {
                "shots": str(k),
                "train_images": len(idx),
                "C": k_c,
                "val_acc_top1": _accuracy(k_clf.predict(Xva), yva),
                "test_acc_top1": _accuracy(k_clf.predict(Xte), yte) if len(yte) else float("nan"),
            }
        )
    kshot_rows.append(
        {
            "shots": "all",
            "train_images": len(ytr),
            "C": best_c,
            "val_acc_top1": val_acc,
            "test_acc_top1": test_acc,
        }
    )
    kshot = pd.DataFrame(kshot_rows)

    probe.cpu()
    probe.set_head_from_sklearn(clf.coef_, clf.intercept_)
    # A cheap self-check the metadata records: torch head == sklearn decision_function.
    with torch.no_grad():
        head_logits = probe.head(torch.from_numpy(Xva)).numpy()
    sk_logits = clf.decision_function(Xva)
    if sk_logits.ndim == 1:
        head_logits, sk_logits = head_logits[:, 1] - head_logits[:, 0], sk_logits
    parity = float(np.abs(head_logits - sk_logits).max())

    kshot_path = write_parquet(out_dir / "kshot.parquet", kshot)
    plot_path = write_figure(out_dir / "kshot.png", _kshot_figure(kshot, loaded.model_id))
    card = ModelCard(
        name="clip_linear_probe",
        class_names=list(names),
        preprocess=loaded.preprocess,
        build_kwargs={**loaded.build_kwargs(), "class_names": list(names)},
        mode="linear_probe",
        weights_source=loaded.weights.source,
        metrics={"val/acc_top1": val_acc},
    )
    bundle = save_bundle(out_dir / BUNDLE_DIR, probe, card)
    metadata = _common_metadata(loaded, cfg)
    metadata.update(
        {
            "val/acc_top1": val_acc,
            "test/acc_top1": test_acc,
            "best_C": best_c,
            "c_grid": c_rows,
            "kshot_table": kshot.to_dict("records"),
            "feature_dim": int(Xtr.shape[1]),
            "train_images": int(len(ytr)),
            "feature_cache_hit": cache_hits,
            "feature_cache_key": feature_cache_key(loaded, splits),
            "feature_seconds": round(feature_seconds, 3),
            "fit_seconds": round(fit_seconds, 3),
            "sklearn_parity_max_abs": parity,
        }
    )
    return FitResult(
        bundle_dir=bundle,
        card=card,
        metadata=metadata,
        plots={"kshot_curve": plot_path},
        artifacts={"kshot_table": kshot_path},
    )


def _kshot_figure(kshot: pd.DataFrame, model_id: str) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    few = kshot[kshot["shots"] != "all"]
    full = kshot[kshot["shots"] == "all"].iloc[0]
    for col, label, colour in (("val_acc_top1", "val", "C0"), ("test_acc_top1", "test", "C1")):
        if len(few):
            ax.plot(
                few["shots"].astype(int), few[col], "o-", color=colour, label=f"{label}, k-shot"
            )
        ax.axhline(
            full[col],
            color=colour,
            ls="--",
            lw=1,
            label=f"{label}, all {full['train_images']} images",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training images per class")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"CLIP linear probe ({model_id})", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig
