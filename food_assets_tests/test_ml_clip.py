"""CLIP zero-shot and linear probe on a tiny random-weight open_clip ViT (no network, no hub).

The tiny model is saved as a local checkpoint file and loaded back through the real path
(`ClipConfig(weights=<file>)` -> `open_clip.create_model(pretrained=<file>)`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from food_assets.ml.artifacts import write_image, write_parquet
from food_assets.ml.data.dataset import ManifestDataset
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.errors import CheckpointError, ConfigError, WeightsNotFoundError
from food_assets.ml.models import clip as clip_mod
from food_assets.ml.models.bundle import load_bundle
from food_assets.ml.models.clip import (
    DEFAULT_TEMPLATES,
    ClipConfig,
    ClipLinearProbe,
    ClipProbeConfig,
    ClipZeroShotClassifier,
    build_class_embeddings,
    clean_class_name,
    clip_weights_available,
    default_preprocess,
    load_clip,
    save_class_embeddings,
)
from food_assets.ml.models.clip import fit as clip_fit
from food_assets.ml.models.registry import create_model, get_model_spec, resolve_cam_layer

TINY_ARCH = "food-assets-test-tiny-vit"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CLASSES = ("apple_pie", "beef_tartare", "caesar_salad")
COLOURS = ((220, 40, 40), (40, 200, 60), (50, 60, 220))  # the colour encodes the class
PER_SPLIT = {"train": 8, "val": 3, "test": 3}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A random-weight tiny CLIP saved as a local open_clip checkpoint file."""
    from safetensors.torch import save_file

    clip_mod.register_arch(TINY_ARCH, TINY_CFG)
    torch.manual_seed(123)
    model = clip_mod._create_open_clip(TINY_ARCH, checkpoint=None, quick_gelu=False)
    path = tmp_path_factory.mktemp("weights") / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def disagreeing_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """Like `tiny_checkpoint`, with a seed whose templates disagree on the val images (seed 123
    gets 3 of 9 right with every template and the ensemble alike, so a gain or best-single
    figure computed from the wrong accuracies would still come out right)."""
    from safetensors.torch import save_file

    clip_mod.register_arch(TINY_ARCH, TINY_CFG)
    torch.manual_seed(7)
    model = clip_mod._create_open_clip(TINY_ARCH, checkpoint=None, quick_gelu=False)
    path = tmp_path_factory.mktemp("weights7") / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> SplitManifest:
    """Colour-coded 32 px images, 3 classes, written as a real split manifest."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rows = []
    for label_idx, (name, colour) in enumerate(zip(CLASSES, COLOURS, strict=True)):
        for split, n in PER_SPLIT.items():
            for i in range(n):
                noise = rng.integers(-25, 26, size=(32, 32, 3))
                arr = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                path = root / name / f"{split}_{i}.png"
                write_image(path, Image.fromarray(arr))
                rows.append(
                    {
                        "path": str(path),
                        "label": name,
                        "label_idx": label_idx,
                        "split": split,
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                        "width": 32,
                        "height": 32,
                        "mode": "RGB",
                        **{c: float("nan") for c in ("box_x0", "box_y0", "box_x1", "box_y1")},
                    }
                )
    manifest = write_parquet(root / "splits.parquet", pd.DataFrame(rows))
    return SplitManifest(path=manifest, class_names=CLASSES, source="imagefolder")


@pytest.fixture()
def cfg(tiny_checkpoint) -> ClipProbeConfig:
    # The probe's settings: the zero-shot functions take them too (a `ClipConfig` subclass).
    return ClipProbeConfig(
        arch=TINY_ARCH,
        model_cfg=TINY_CFG,
        weights=str(tiny_checkpoint),
        batch_size=8,
        device="cpu",
        c_grid=(0.1, 1.0, 10.0, 100.0),
        class_name_overrides={"beef_tartare": "steak tartare"},
    )


def _val_batch(splits: SplitManifest, pre) -> tuple[torch.Tensor, torch.Tensor]:
    ds = ManifestDataset(splits.frame("val"), pre, train=False)
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.tensor(ys)


# ---------------------------------------------------------------------------------- registry


def test_registry_entries_and_preprocess_from_open_clip() -> None:
    import open_clip

    zs, probe = get_model_spec("clip_zero_shot"), get_model_spec("clip_linear_probe")
    assert (zs.family, probe.family) == ("zero_shot", "probe")
    pre = zs.preprocess()
    # Read from open_clip's own configs: OpenAI mean/std, bicubic, 224 px, resize+centre crop.
    assert pre.mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    assert pre.std == tuple(open_clip.OPENAI_DATASET_STD)
    assert (pre.input_size, pre.interpolation, pre.crop_pct) == (224, "bicubic", 1.0)
    assert default_preprocess("ViT-B-16", "openai").input_size == 224


def test_cam_layer_and_reshape_on_tiny_vit(cfg: ClipConfig) -> None:
    spec = get_model_spec("clip_zero_shot")
    model = create_model("clip_zero_shot", num_classes=3, weights="none", **_arch_kwargs())
    layer = resolve_cam_layer(model, spec.cam_layer)
    assert layer is model.visual.transformer.resblocks[-1].ln_1
    seen = {}
    handle = layer.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    model(torch.randn(2, 3, 32, 32))
    handle.remove()
    tokens = seen["out"]
    assert tokens.shape == (2, 1 + 16, 32)  # batch-first: (N, 1 + 4*4 patches, width)
    fmap = spec.cam_reshape(tokens)
    assert fmap.shape == (2, 32, 4, 4)
    assert torch.equal(fmap[:, :, 0, 1], tokens[:, 2, :])  # patch (0, 1) is token 2 (cls dropped)


def _arch_kwargs() -> dict:
    return {"arch": TINY_ARCH, "model_cfg": TINY_CFG, "quick_gelu": False}


# ---------------------------------------------------------------------------------- weights


def test_loads_local_checkpoint_through_open_clip(cfg: ClipConfig, tiny_checkpoint) -> None:
    from safetensors.torch import load_file

    ok, reason = clip_weights_available(cfg)
    assert ok and str(tiny_checkpoint) in reason
    loaded = load_clip(cfg)
    saved = load_file(str(tiny_checkpoint))
    state = loaded.model.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    assert loaded.preprocess.input_size == 32 and loaded.preprocess.crop_pct == 1.0
    assert loaded.weights.identity().startswith("sha256:")


def test_missing_weights_errors_name_the_fix(tmp_path) -> None:
    empty_cache = tmp_path / "hf-cache"
    empty_cache.mkdir()
    ok, reason = clip_weights_available(ClipConfig(weights="openai", cache_dir=str(empty_cache)))
    assert not ok
    assert "`checkpoint`" in reason and "timm/vit_base_patch32_clip_224.openai" in reason
    with pytest.raises(WeightsNotFoundError, match="`checkpoint`"):
        load_clip(ClipConfig(weights="openai", cache_dir=str(empty_cache)))
    with pytest.raises(WeightsNotFoundError, match="does not exist.*`checkpoint`"):
        load_clip(ClipConfig(weights="openai", checkpoint=str(tmp_path / "nope.safetensors")))
    with pytest.raises(ConfigError, match="allow_random"):
        load_clip(ClipConfig(weights="none"))
    with pytest.raises(ConfigError, match="known tags: openai"):
        load_clip(ClipConfig(weights="not-a-tag"))
    with pytest.raises(ConfigError, match="placeholder"):
        ClipConfig(extra_templates=("a photo of food.",))


def test_tag_found_in_local_hugging_face_cache(tiny_checkpoint, tmp_path) -> None:
    # The hub cache layout: models--org--name/{refs/main, snapshots/<rev>/<file>}.
    repo = tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(tiny_checkpoint.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    resolved = clip_mod.resolve_clip_weights(ClipConfig(cache_dir=str(tmp_path / "hub")))
    assert resolved.checkpoint == snapshot / "open_clip_model.safetensors"
    assert resolved.tag == "openai" and resolved.tag_cfg["quick_gelu"] is True


def test_random_init_only_when_asked_and_seeded() -> None:
    cfg = ClipConfig(arch=TINY_ARCH, model_cfg=TINY_CFG, weights="none", allow_random=True, seed=3)
    a, b = load_clip(cfg), load_clip(cfg)
    assert torch.equal(a.model.visual.proj, b.model.visual.proj)
    assert a.weights.identity() == "random-init:seed3"


# ---------------------------------------------------------------------------------- zero-shot


def test_class_names_cleaned_with_overrides() -> None:
    assert clean_class_name("apple_pie") == "apple pie"
    assert clean_class_name("pho", {"pho": "pho noodle soup"}) == "pho noodle soup"


def test_ensemble_matches_direct_text_encoding(cfg: ClipConfig) -> None:
    loaded = load_clip(cfg)
    templates = cfg.templates()
    emb = build_class_embeddings(loaded, CLASSES, templates, overrides=cfg.class_name_overrides)
    assert emb.prompt_names == ("apple pie", "steak tartare", "caesar salad")
    rows = []
    with torch.no_grad():
        for name in emb.prompt_names:
            tokens = loaded.tokenizer([t.replace("{c}", name) for t in templates])
            per_prompt = F.normalize(loaded.model.encode_text(tokens), dim=-1)
            rows.append(F.normalize(per_prompt.mean(0), dim=0))
    torch.testing.assert_close(emb.matrix, torch.stack(rows), atol=1e-6, rtol=0)
    assert emb.class_names == CLASSES and emb.templates == DEFAULT_TEMPLATES


def test_text_encoded_once_then_image_tower_only(cfg: ClipConfig, splits, monkeypatch) -> None:
    loaded = load_clip(cfg)
    calls = {"n": 0}
    original = loaded.model.encode_text

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "encode_text", counting)
    emb = build_class_embeddings(loaded, CLASSES, cfg.templates())
    assert calls["n"] == math.ceil(len(CLASSES) / 10)  # all prompts of <= 10 classes per forward
    model = ClipZeroShotClassifier(
        loaded.model.visual, emb.matrix, logit_scale=100.0, class_names=CLASSES
    ).eval()
    x, _ = _val_batch(splits, loaded.preprocess)
    with torch.no_grad():
        for batch in x.split(3):  # several batches
            model(batch)
    assert calls["n"] == math.ceil(len(CLASSES) / 10)
    assert not any(k.startswith(("transformer.", "token_embedding")) for k in model.state_dict())
    with torch.no_grad():
        expected = 100.0 * F.normalize(loaded.model.encode_image(x), dim=-1) @ emb.matrix.T
        torch.testing.assert_close(model(x), expected)


def test_class_order_guard(cfg: ClipConfig, splits, tmp_path) -> None:
    loaded = load_clip(cfg)
    emb = build_class_embeddings(loaded, tuple(reversed(CLASSES)), cfg.templates())
    model = ClipZeroShotClassifier(
        loaded.model.visual, torch.zeros(3, 32), logit_scale=100.0, class_names=CLASSES
    )
    with pytest.raises(CheckpointError, match="caesar_salad.*apple_pie.*apple_pie.*caesar_salad"):
        model.set_class_embeddings(emb)
    path = save_class_embeddings(tmp_path / "class_embeddings.safetensors", emb)
    with pytest.raises(CheckpointError, match="another class order"):
        clip_fit.fit_clip_zero_shot(
            splits, dataclasses.replace(cfg, class_embeddings=str(path)), tmp_path / "zs"
        )


@pytest.mark.slow
def test_fit_zero_shot_reports_templates_and_round_trips(
    cfg: ClipConfig, disagreeing_checkpoint, splits, tmp_path
) -> None:
    cfg = dataclasses.replace(cfg, weights=str(disagreeing_checkpoint))
    cache = tmp_path / "features"
    result = clip_fit.fit_clip_zero_shot(splits, cfg, tmp_path / "zs", feature_cache_dir=cache)
    assert result.metadata["feature_cache_hit"] == {"val": False}
    table = pd.DataFrame(result.metadata["template_table"])
    val = table[table["split"] == "val"]
    assert list(val["prompts"]) == [*DEFAULT_TEMPLATES, "ensemble of 4"]
    md = result.metadata
    assert md["val/acc_top1"] == val["acc_top1"].iloc[-1]
    # The gain is derived from the two accuracies it names; each row's accuracy is recomputed
    # from the tiny model itself: one text matrix per template, the ensemble's from the bundle.
    # Breakages tried, each fails: gain = ensemble - min(single); gain = mean-single based;
    # the table's single-template rows computed with the ensemble matrix.
    assert md["val/ensemble_gain_over_best_single"] == pytest.approx(
        md["val/acc_top1"] - md["val/acc_top1_best_single_template"], abs=1e-12
    )
    loaded = load_clip(cfg)
    x, y = _val_batch(splits, loaded.preprocess)
    with torch.no_grad():
        feats = loaded.model.encode_image(x, normalize=True)
        single = {}
        for t in DEFAULT_TEMPLATES:
            m = build_class_embeddings(loaded, CLASSES, [t], overrides=cfg.class_name_overrides)
            single[t] = float(((feats @ m.matrix.T).argmax(1) == y).double().mean())
        zs_model, _ = load_bundle(result.bundle_dir)
        ensemble = float((zs_model(x).argmax(1) == y).double().mean())
    assert len(set(single.values())) > 2 and ensemble != max(single.values()), (single, ensemble)
    assert val["acc_top1"].tolist() == pytest.approx([*single.values(), ensemble], abs=1e-9)
    assert md["val/acc_top1_best_single_template"] == pytest.approx(max(single.values()))
    assert md["val/acc_top1_mean_single_template"] == pytest.approx(np.mean(list(single.values())))
    assert md["val/ensemble_gain_over_best_single"] == pytest.approx(
        ensemble - max(single.values()), abs=1e-9
    )
    assert md["templates"] == list(DEFAULT_TEMPLATES)
    assert result.metadata["weights_source"].endswith("tiny_clip.safetensors")

    # The bundle rebuilds offline from build_kwargs and carries the class matrix.
    model, card = load_bundle(result.bundle_dir)
    assert card.class_names == list(CLASSES) and card.mode == "zero_shot"
    assert model.class_names == CLASSES
    saved = clip_mod.load_class_embeddings(result.artifacts["class_embeddings"])
    torch.testing.assert_close(model.class_embeddings, saved.matrix)
    x, _ = _val_batch(splits, card.preprocess)
    loaded = load_clip(cfg)
    with torch.no_grad():
        direct = (
            loaded.model.logit_scale.exp()
            * loaded.model.encode_image(x, normalize=True)
            @ saved.matrix.T
        )
        torch.testing.assert_close(model(x), direct, atol=1e-5, rtol=1e-5)

    # Re-using the saved matrix skips text encoding and must give the same classifier.
    again = clip_fit.fit_clip_zero_shot(
        splits,
        dataclasses.replace(cfg, class_embeddings=str(result.artifacts["class_embeddings"])),
        tmp_path / "zs2",
    )
    assert again.metadata["class_embeddings_reused"]
    assert again.metadata["val/acc_top1"] == result.metadata["val/acc_top1"]

    # The probe shares the cache: same image tower, same normalised features.
    probe = clip_fit.fit_clip_linear_probe(splits, cfg, tmp_path / "probe", feature_cache_dir=cache)
    assert probe.metadata["feature_cache_hit"] == {"train": False, "val": True, "test": False}


# ---------------------------------------------------------------------------------- probe


def test_sklearn_torch_logit_parity(cfg: ClipConfig, splits) -> None:
    from sklearn.linear_model import LogisticRegression

    loaded = load_clip(cfg)
    probe = ClipLinearProbe(loaded.model.visual, len(CLASSES), CLASSES).eval()
    x, y = _val_batch(splits, loaded.preprocess)
    with torch.no_grad():
        feats = probe.encode_image(x).numpy()
    clf = LogisticRegression(C=10.0, max_iter=1000).fit(feats, y.numpy())
    probe.set_head_from_sklearn(clf.coef_, clf.intercept_)
    with torch.no_grad():
        logits = probe(x).numpy()
    np.testing.assert_allclose(logits, clf.decision_function(feats), atol=1e-4, rtol=0)

    # Binary: one sklearn row becomes [-d/2, d/2]; softmax equals sklearn's probability.
    binary = ClipLinearProbe(loaded.model.visual, 2).eval()
    yb = (y.numpy() == 0).astype(int)
    clf2 = LogisticRegression(C=10.0, max_iter=1000).fit(feats, yb)
    binary.set_head_from_sklearn(clf2.coef_, clf2.intercept_)
    with torch.no_grad():
        p = binary(x).softmax(-1).numpy()
    np.testing.assert_allclose(p, clf2.predict_proba(feats), atol=1e-5)


@pytest.mark.slow
def test_linear_probe_learns_and_reuses_feature_cache(
    cfg: ClipConfig, splits, tmp_path, monkeypatch
) -> None:
    cache = tmp_path / "features"
    result = clip_fit.fit_clip_linear_probe(
        splits, cfg, tmp_path / "probe", feature_cache_dir=cache
    )
    md = result.metadata
    assert md["feature_cache_hit"] == {"train": False, "val": False, "test": False}
    assert md["val/acc_top1"] == 1.0 and md["test/acc_top1"] == 1.0  # colours are learnable
    assert md["sklearn_parity_max_abs"] < 1e-4
    kshot = pd.DataFrame(md["kshot_table"])
    assert list(kshot["shots"]) == ["1", "2", "4", "8", "all"]  # 16 > 8 images per class: skipped
    assert result.plots["kshot_curve"].read_bytes()[:4] == b"\x89PNG"
    assert len(list(cache.glob("*.safetensors"))) == 3

    model, card = load_bundle(result.bundle_dir)
    x, y = _val_batch(splits, card.preprocess)
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), y)

    # Second call: features come from disk; the image tower never runs on the splits.
    def no_extraction(*args, **kwargs):
        raise AssertionError("features were re-extracted")

    monkeypatch.setattr(clip_fit, "extract_features", no_extraction)
    again = clip_fit.fit_clip_linear_probe(
        splits, cfg, tmp_path / "probe2", feature_cache_dir=cache
    )
    assert again.metadata["feature_cache_hit"] == {"train": True, "val": True, "test": True}
    assert again.metadata["val/acc_top1"] == md["val/acc_top1"]


# ---------------------------------------------------------------------------------- ensemble


def test_zero_shot_probe_ensemble_arithmetic(cfg: ClipConfig, splits) -> None:
    """Breakage caught: the mixed head not equal to (1 - alpha) * zero-shot logits + alpha *
    probe logits (a missing logit scale, the bias not scaled by alpha, alpha applied to the
    wrong side), or alpha not the val-best grid value."""
    from sklearn.linear_model import LogisticRegression

    from food_assets.ml.models.clip.ensemble import ALPHA_GRID, fit_ensemble

    loaded = load_clip(cfg)
    emb = build_class_embeddings(loaded, CLASSES, cfg.templates())
    scale = float(loaded.model.logit_scale.detach().exp())
    probe = ClipLinearProbe(loaded.model.visual, len(CLASSES), CLASSES).eval()
    feats = {}
    for split in ("train", "val"):
        ds = ManifestDataset(splits.frame(split), loaded.preprocess, train=False)
        xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
        with torch.no_grad():
            feats[split] = (probe.encode_image(torch.stack(xs)).numpy(), np.array(ys))
    # Weak on purpose (C small): the probe and the zero-shot head disagree on some images.
    clf = LogisticRegression(C=0.05, max_iter=1000).fit(*feats["train"])
    probe.set_head_from_sklearn(clf.coef_, clf.intercept_)
    fit = fit_ensemble(feats, emb.matrix, scale, probe.head)

    X, y = feats["val"]
    E = emb.matrix.numpy()
    zs, pr = scale * X @ E.T, clf.decision_function(X)
    val_acc = {a: float((((1 - a) * zs + a * pr).argmax(1) == y).mean()) for a in ALPHA_GRID}
    best = max(val_acc.values())
    assert fit.alpha == max(a for a, v in val_acc.items() if v == best)
    assert [r["val_acc_top1"] for r in fit.alpha_rows] == list(val_acc.values())
    assert fit.scores["val/acc_top1_zero_shot"] == val_acc[0.0]
    assert fit.scores["val/acc_top1_probe"] == val_acc[1.0]
    for alpha in (0.0, 0.3, 1.0):
        w, b = (1 - alpha) * scale * E + alpha * clf.coef_, alpha * clf.intercept_
        head = fit_ensemble(feats, emb.matrix, scale, probe.head, grid=(alpha,))
        got = X @ head.weight.numpy().T + head.bias.numpy()
        np.testing.assert_allclose(got, X @ w.T + b, atol=1e-4, rtol=1e-5)


def test_alpha_is_the_val_best_with_ties_to_the_probe() -> None:
    """Breakage caught: alpha not chosen by val accuracy (e.g. always the probe, alpha = 1), or
    ties broken towards the zero-shot side. Each head alone gets one of the two images right;
    only a mix in (1/4, 2/3) gets both."""
    from food_assets.ml.models.clip.ensemble import ALPHA_GRID, choose_alpha

    zero_shot = np.array([[2.0, 0.0], [1.0, 0.0]])
    probe = np.array([[0.0, 1.0], [0.0, 3.0]])
    alpha, rows = choose_alpha(zero_shot, probe, np.array([0, 1]), ALPHA_GRID)
    assert alpha == 0.6  # 0.3 ... 0.6 all score 1.0: the largest wins
    acc = {r["alpha"]: r["val_acc_top1"] for r in rows}
    assert acc[0.0] == acc[1.0] == 0.5 and acc[0.2] == 0.5 and acc[0.7] == 0.5


@pytest.mark.slow
def test_linear_probe_reports_and_bundles_the_zero_shot_ensemble(
    cfg: ClipConfig, splits, tmp_path, monkeypatch
) -> None:
    """Breakage caught: the ensemble not reported beside both heads, `bundle` not storing the
    mixed head (the bundle would predict like the plain probe), or `report` changing the
    probe's bundle. alpha is pinned to 0.4: on these colour images the probe alone is best, and
    at alpha = 1 a bundle without the mix would look right."""
    from food_assets.ml.models.clip import ensemble
    from food_assets.ml.models.clip.text import build_class_embeddings as encode

    monkeypatch.setattr(ensemble, "ALPHA_GRID", (0.4,))
    cache = tmp_path / "features"
    fit = clip_fit.fit_clip_linear_probe
    report = fit(splits, cfg, tmp_path / "report", feature_cache_dir=cache)
    bundled = fit(
        splits,
        dataclasses.replace(cfg, zero_shot_ensemble="bundle"),
        tmp_path / "bundle",
        feature_cache_dir=cache,
    )
    md = bundled.metadata
    alpha = md["ensemble/alpha"]
    assert alpha == 0.4
    assert md["ensemble/in_bundle"] and not report.metadata["ensemble/in_bundle"]
    for key in ("zero_shot", "probe", "ensemble"):
        assert 0 <= md[f"ensemble/test/acc_top1_{key}"] <= 1
    assert md["ensemble/val/acc_top1_probe"] == report.metadata["val/acc_top1"]
    assert len(md["ensemble_alpha_table"]) == 1

    probe, card = load_bundle(report.bundle_dir)
    mixed, _ = load_bundle(bundled.bundle_dir)
    loaded = load_clip(cfg)
    E = encode(loaded, CLASSES, cfg.templates(), overrides=cfg.class_name_overrides).matrix
    scale = float(loaded.model.logit_scale.detach().exp())
    x, _ = _val_batch(splits, card.preprocess)
    with torch.no_grad():
        f = probe.encode_image(x)
        expected = (1 - alpha) * scale * f @ E.T + alpha * probe(x)
        torch.testing.assert_close(mixed(x), expected, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------------------------- ONNX


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip_zero_shot", "clip_linear_probe"])
def test_onnx_export_dynamic_batch_parity(name: str, tmp_path) -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = create_model(name, num_classes=3, weights="none", **_arch_kwargs()).eval()
    if name == "clip_zero_shot":
        model.class_embeddings.copy_(F.normalize(torch.randn(3, 32), dim=-1))
    path = tmp_path / f"{name}.onnx"
    # torch 2.14's default exporter is torch.export-based (dynamo=True, uses onnxscript); the
    # TorchScript one (dynamo=False) raises a DeprecationWarning.
    torch.onnx.export(
        model,
        (torch.randn(2, 3, 32, 32),),
        str(path),
        dynamo=True,
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32)
    (onnx_logits,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_logits, model(x).numpy(), atol=1e-4, rtol=0)
