"""Grad-CAM: maps, galleries whose tiles are the images they claim, and the sanity figures.

The "does the CAM point at the object" tests use `SquareNet`, a hand-built network whose
feature maps *are* the object (a red or blue square on grey): its Grad-CAM must peak on the
square, so the pointing game must beat the random baseline by a wide margin.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from food_assets.ml.data.transforms import ImagePipeline, Preprocess, build_transform, denormalize
from food_assets.ml.explain import (
    GradcamTile,
    build_gradcam_report,
    compute_cams,
    deletion_test,
    map_box_to_input,
    overlay,
    pointing_baseline,
    pointing_game,
    random_pointing_game,
    render_gallery,
    tile_boxes,
    top_fraction_mask,
)
from food_assets.ml.models.bundle import ModelCard
from food_assets.ml.models.registry import (
    create_model,
    get_model_spec,
    list_models,
    resolve_cam_layer,
)
from food_assets_tests.conftest import registry_param
from food_assets_tests.reference import spread_logits

CLASSES = ["blue_square", "red_square"]
COLOURS = {"blue_square": (30, 40, 220), "red_square": (220, 30, 30)}
PRE = Preprocess(input_size=48, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.8)


class SquareNet(nn.Module):
    """Channel 0 = redness, channel 1 = blueness, ReLU, global average pool, a fixed head."""

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 2, kernel_size=1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([[1.0, -0.5, -0.5], [-0.5, -0.5, 1.0]]).view(2, 3, 1, 1))
        self.features = nn.Sequential(conv, nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():  # logit order follows CLASSES: blue, red
            self.head.weight.copy_(torch.tensor([[0.0, 40.0], [40.0, 0.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def _square_image(rng: np.random.Generator, colour: tuple[int, int, int], w: int, h: int):
    arr = np.full((h, w, 3), 128, dtype=np.uint8)
    side = int(rng.integers(12, 18))
    # Keep the square inside the centre crop so the box survives the eval transform.
    x0 = int(rng.integers(w // 8, w - w // 8 - side))
    y0 = int(rng.integers(h // 8, h - h // 8 - side))
    arr[y0 : y0 + side, x0 : x0 + side] = colour
    return Image.fromarray(arr), (x0, y0, x0 + side, y0 + side)


@pytest.fixture(scope="module")
def square_frame(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """10 images per class (varied sizes) plus 3 mislabelled ones, as a split manifest."""
    root = tmp_path_factory.mktemp("squares")
    rng = np.random.default_rng(0)
    rows = []
    for label in CLASSES:
        for i in range(10):
            w, h = (96, 72) if i % 2 else (70, 90)
            img, box = _square_image(rng, COLOURS[label], w, h)
            rows.append((root / f"{label}_{i:02d}.png", img, label, box))
    for i in range(3):  # drawn red, labelled blue: the model is confidently wrong on them
        img, box = _square_image(rng, COLOURS["red_square"], 80, 80)
        rows.append((root / f"mislabelled_{i}.png", img, "blue_square", box))
    records = []
    for path, img, label, box in rows:
        img.save(path)
        records.append(
            {
                "path": str(path),
                "label": label,
                "label_idx": CLASSES.index(label),
                "split": "test",
                "width": img.width,
                "height": img.height,
                **dict(zip(("box_x0", "box_y0", "box_x1", "box_y1"), map(float, box), strict=True)),
            }
        )
    return pd.DataFrame(records)


# ---------------------------------------------------------------------------------------------
# Box mapping and pointing-game arithmetic


def test_map_box_to_input_hand_computed() -> None:
    pre = Preprocess(input_size=64, crop_pct=0.8)  # resize_size 80
    # 200x100 -> 160x80 (scale 0.8), centre crop 64: left (160-64)/2 = 48, top (80-64)/2 = 8.
    assert map_box_to_input((100, 50, 150, 100), 200, 100, pre) == (32.0, 32.0, 64.0, 64.0)
    assert map_box_to_input((60, 10, 110, 60), 200, 100, pre) == (0.0, 0.0, 40.0, 40.0)
    # Portrait: 100x200 -> 80x160; top offset 48.
    assert map_box_to_input((10, 70, 60, 90), 100, 200, pre) == (0.0, 8.0, 40.0, 24.0)
    # Wholly outside the crop: an empty box, which the pointing game leaves out.
    x0, y0, x1, y1 = map_box_to_input((0, 0, 20, 20), 200, 100, pre)
    assert x0 == x1 or y0 == y1


@pytest.mark.parametrize(
    ("w", "h", "crop_pct", "box"),
    [
        (120, 90, 0.875, (40, 30, 80, 70)),
        (77, 131, 0.9, (10, 50, 60, 100)),
        (64, 64, 1.0, (5, 9, 30, 41)),
    ],
)
def test_map_box_to_input_matches_the_eval_transform(w, h, crop_pct, box) -> None:
    """Paint the box white on black, push it through the real eval transform, find it again."""
    pre = Preprocess(input_size=48, mean=(0, 0, 0), std=(1, 1, 1), crop_pct=crop_pct)
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[box[1] : box[3], box[0] : box[2]] = 255
    x = build_transform(pre, train=False)(Image.fromarray(arr))[0].numpy()
    ys, xs = np.nonzero(x > 0.5)
    found = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    mapped = map_box_to_input(box, w, h, pre)
    np.testing.assert_allclose(mapped, found, atol=1.5)


def test_pointing_game_and_baselines() -> None:
    cams = np.zeros((4, 10, 10), dtype=np.float32)
    cams[0, 2, 3] = 1  # inside box 0
    cams[1, 9, 9] = 1  # outside box 1
    cams[2, 5, 5] = 1  # inside box 2
    boxes = np.array(
        [[2, 1, 5, 4], [0, 0, 5, 5], [4, 4, 6, 6], [np.nan, np.nan, np.nan, np.nan]], dtype=float
    )
    assert pointing_game(cams, boxes) == pytest.approx(2 / 3)  # the NaN row is left out
    # Pixel-centre counts: 3x3, 5x5 and 2x2 of 100.
    assert pointing_baseline(boxes, 10, 10) == pytest.approx((9 + 25 + 4) / 300)
    emp = random_pointing_game(boxes, 10, 10, trials=400, seed=1)
    assert emp == pytest.approx(pointing_baseline(boxes, 10, 10), abs=0.03)
    assert np.isnan(pointing_game(cams[3:], boxes[3:]))


def test_top_fraction_mask_size() -> None:
    cams = np.random.default_rng(0).random((3, 10, 10))
    mask = top_fraction_mask(cams, 0.2)
    assert mask.sum(axis=(1, 2)).tolist() == [20, 20, 20]
    for cam, m in zip(cams, mask, strict=True):  # the kept pixels are the largest ones
        assert cam[m].min() >= cam[~m].max()
    assert mask[0][cams[0] == cams[0].max()].all()


# ---------------------------------------------------------------------------------------------
# CAMs on a model whose evidence is known


def _inputs(frame: pd.DataFrame) -> torch.Tensor:
    pipe = ImagePipeline(PRE)
    return torch.stack([pipe(p) for p in frame["path"]])


def _boxes(frame: pd.DataFrame) -> np.ndarray:
    return np.array(
        [
            map_box_to_input(
                (r.box_x0, r.box_y0, r.box_x1, r.box_y1), int(r.width), int(r.height), PRE
            )
            for r in frame.itertuples()
        ]
    )


def test_cams_point_at_the_object_and_hooks_are_released(square_frame: pd.DataFrame) -> None:
    model = SquareNet()
    layer = resolve_cam_layer(model, "features")
    x = _inputs(square_frame)
    with torch.no_grad():  # compute_cams must work even when the caller disabled gradients
        cams = compute_cams(model, layer, x, batch_size=7)
    with torch.inference_mode():
        np.testing.assert_array_equal(compute_cams(model, layer, x.clone(), batch_size=7), cams)
    assert cams.shape == (len(x), PRE.input_size, PRE.input_size)
    assert cams.dtype == np.float32
    # Each map spans exactly [0, 1] (every image has a square, so evidence somewhere); a range
    # check alone once accepted all-zero maps.
    np.testing.assert_allclose(cams.max(axis=(1, 2)), 1.0, atol=1e-5)
    np.testing.assert_array_equal(cams.min(axis=(1, 2)), 0.0)
    assert not layer._forward_hooks and not layer._backward_hooks

    boxes = _boxes(square_frame)
    score, chance = pointing_game(cams, boxes), pointing_baseline(boxes, 48, 48)
    assert score >= 0.95
    assert chance < 0.2
    assert random_pointing_game(boxes, 48, 48, seed=0) < 0.3


def test_deletion_hurts_more_where_the_cam_points(square_frame: pd.DataFrame) -> None:
    model = SquareNet()
    x = _inputs(square_frame)
    preds = model(x).argmax(1).tolist()
    cams = compute_cams(model, model.features, x, targets=preds)
    out = deletion_test(model, x, cams, preds, fraction=0.2, seed=0)
    assert out["n"] == len(x)
    assert out["cam_drop"] > out["random_drop"] + 0.2
    assert out["win_rate"] >= 0.8


def test_compute_cams_frozen_backbone_and_explicit_targets(square_frame: pd.DataFrame) -> None:
    """Feature-extract models have no trainable parameter before the head: CAMs still work."""
    model = SquareNet().requires_grad_(False)
    x = _inputs(square_frame.head(4))
    cams_red = compute_cams(model, model.features, x, targets=[1] * 4)
    cams_blue = compute_cams(model, model.features, x, targets=[0] * 4)
    assert cams_red.shape == cams_blue.shape == (4, 48, 48)
    # Blue images: the "red" CAM has no evidence anywhere (all zeros), the "blue" one does.
    assert cams_blue[:4].max() > 0.99


def _vit_reshape(tokens: torch.Tensor, side: int = 4) -> torch.Tensor:
    # (N, 1 + side*side, C) tokens -> (N, C, side, side), dropping the class token.
    n, _, c = tokens.shape
    return tokens[:, 1:, :].reshape(n, side, side, c).permute(0, 3, 1, 2)


def test_compute_cams_vit_with_reshape() -> None:
    import timm  # a hard dependency: its absence is an error, not a skip

    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=3
    ).eval()
    layer = resolve_cam_layer(model, "blocks.-1.norm1")
    x = torch.randn(2, 3, 32, 32)
    cams = compute_cams(model, layer, x, reshape=_vit_reshape)
    assert cams.shape == (2, 32, 32)
    np.testing.assert_allclose(cams.max(axis=(1, 2)), 1.0, atol=1e-5)  # not a blank map
    np.testing.assert_array_equal(cams.min(axis=(1, 2)), 0.0)
    assert not layer._forward_hooks


class InplaceNet(nn.Module):
    """A conv whose output an in-place ReLU overwrites: the target layer of the next test."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(self.stem(x))).mean(dim=(2, 3)))


def _library_cams(model: nn.Module, layer: nn.Module, x: torch.Tensor, targets) -> np.ndarray:
    """The grad-cam library on its own: a full backward from the logit to the input."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(model=model, target_layers=[layer])
    try:
        x = x.clone().requires_grad_(True)
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        cam.activations_and_grads.release()


def test_gradient_stop_gives_the_full_backward_cams() -> None:
    """CAMs with the backward stopped at the target layer (ADR 0015) equal the library's full
    backward; nothing before the layer records a graph; the parameters' requires_grad flags come
    back as they were (a frozen stem stays frozen, the rest trainable); an in-place op on the
    layer's output works.

    Breakage caught: the leaf not cloned (the in-place ReLU fails on a leaf); the flags not
    restored; the parameters left trainable during the pass (the stem's output requires grad,
    so the whole backbone's graph is kept); the hook removed (no gradient reaches the layer).
    """
    torch.manual_seed(0)
    x = torch.randn(3, 3, 96, 96)  # 96 px: the CNN's last map is 3x3, not a blank 1x1
    for model, layer_name in ((InplaceNet(), "conv"), (_custom_cnn(), "head")):
        model.eval()
        first = next(model.parameters())
        first.requires_grad_(False)
        flags = [p.requires_grad for p in model.parameters()]
        layer = resolve_cam_layer(model, layer_name)
        with torch.no_grad():
            targets = ((model(x).argmax(1) + 1) % 3).tolist()  # not the predicted class
        expected = _library_cams(model, layer, x, targets)
        graph: list[bool] = []
        stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        hook = stem.register_forward_hook(
            lambda _m, _a, out, seen=graph: seen.append(out.requires_grad)
        )
        try:
            cams = compute_cams(model, layer, x, targets, batch_size=2)
        finally:
            hook.remove()
        np.testing.assert_allclose(cams, expected, atol=1e-5)
        assert cams.max() > 0.99  # not blank maps that would match trivially
        assert graph == [False, False]  # two batches, neither recorded a graph at the stem
        assert [p.requires_grad for p in model.parameters()] == flags
        assert not layer._forward_hooks


def _custom_cnn() -> nn.Module:
    model = create_model("custom_cnn", num_classes=3, weights="none")
    return spread_logits(model, 96, seed=0)


def test_gradcam_report_streams_cams_in_batches(square_frame, tmp_path, monkeypatch) -> None:
    """The CAM pass decodes, explains and scores `batch_size` images at a time and drops each
    batch before the next (ADR 0015), and batching changes no figure and no tile.

    Breakage caught: all needed images stacked and explained in one call (the pass before
    streaming: one call of 23 images); a batch's inputs kept alive after it (its tensor is still
    referenced when the next batch comes); a sanity figure that depends on the batch size.
    """
    import gc
    import weakref

    from food_assets.ml.explain import report

    calls: list[int] = []
    seen: list[weakref.ref] = []  # every batch's input tensor
    still_alive: list[int] = []  # at each call: how many earlier batches are still referenced
    real = report.compute_cams

    def spy(model, layer, images, *args, **kwargs):
        gc.collect()
        still_alive.append(sum(r() is not None for r in seen))
        calls.append(len(images))
        seen.append(weakref.ref(images))
        return real(model, layer, images, *args, **kwargs)

    card = ModelCard(name="squarenet", class_names=CLASSES, preprocess=PRE, temperature=2.0)
    kw = dict(n_per_gallery=3, per_class=2, n_sanity=64, seed=0)
    one = build_gradcam_report(
        SquareNet(), card, "features", None, square_frame, tmp_path / "one", batch_size=64, **kw
    )
    monkeypatch.setattr(report, "compute_cams", spy)
    streamed = build_gradcam_report(
        SquareNet(), card, "features", None, square_frame, tmp_path / "s", batch_size=4, **kw
    )
    assert calls == [4, 4, 4, 4, 4, 3]  # 23 images: sanity covers the whole frame
    assert still_alive == [0] * len(calls), "a previous batch's inputs are still referenced"
    for key, value in one.metrics.items():
        assert streamed.metrics[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    pd.testing.assert_frame_equal(one.tiles, streamed.tiles)
    for name, path in one.galleries.items():
        np.testing.assert_array_equal(
            np.asarray(Image.open(path)), np.asarray(Image.open(streamed.galleries[name]))
        )


# ---------------------------------------------------------------------------------------------
# Galleries


def test_render_gallery_pastes_tiles_pixel_for_pixel(tmp_path) -> None:
    rng = np.random.default_rng(0)
    tiles = [
        GradcamTile(
            image=rng.random((20, 24, 3)).astype(np.float32),
            cam=rng.random((20, 24)).astype(np.float32),
            true_class=f"class_{i}",
            pred_class="class_0",
            confidence=0.5,
        )
        for i in range(5)
    ]
    out = render_gallery(tiles, tmp_path / "g.png", columns=3)
    png = np.asarray(Image.open(out).convert("RGB"))
    for tile, (x0, y0, x1, y1) in zip(tiles, tile_boxes(5, 24, 20, 3), strict=True):
        np.testing.assert_array_equal(png[y0:y1, x0:x1], overlay(tile.image, tile.cam))
    assert not list(tmp_path.glob(".*"))  # no temporary left behind
    empty = render_gallery([], tmp_path / "empty.png", title="no wrong predictions")
    assert Image.open(empty).size[0] > 0


def test_gradcam_report_tiles_are_the_images_claimed(square_frame, tmp_path) -> None:
    model = SquareNet()
    card = ModelCard(name="squarenet", class_names=CLASSES, preprocess=PRE, temperature=2.0)
    result = build_gradcam_report(
        model, card, "features", None, square_frame, tmp_path / "gradcam",
        n_per_gallery=6, per_class=3, n_sanity=64, seed=0,
    )  # fmt: skip

    assert set(result.galleries) == {"correct", "wrong", "per_class"}
    for path in (*result.galleries.values(), result.tiles_path, result.manifest_path):
        assert path.is_file()
    tiles = pd.read_parquet(result.tiles_path)
    pd.testing.assert_frame_equal(tiles, result.tiles)
    counts = tiles["gallery"].value_counts().to_dict()
    assert counts == {"correct": 6, "wrong": 3, "per_class": 6}

    # The wrong gallery holds exactly the mislabelled images, most confident first.
    wrong = tiles[tiles["gallery"] == "wrong"]
    assert sorted(wrong["path"].map(lambda p: p.rsplit("/", 1)[-1])) == [
        f"mislabelled_{i}.png" for i in range(3)
    ]
    assert (wrong["pred_class"] == "red_square").all() and not wrong["correct"].any()
    correct = tiles[tiles["gallery"] == "correct"]
    assert correct["confidence"].is_monotonic_decreasing and correct["correct"].all()

    # Each tile, cropped out of its PNG, is the overlay of the image it claims, and the claimed
    # prediction and confidence are what the model says about that file.
    pipe = ImagePipeline(PRE)
    for gallery, group in tiles.groupby("gallery"):
        png = np.asarray(Image.open(result.galleries[gallery]).convert("RGB")).astype(int)
        for t in group.itertuples():
            x = pipe(t.path)[None]
            probs = (model(x) / card.temperature).softmax(1)[0].detach()
            assert CLASSES[int(probs.argmax())] == t.pred_class
            assert float(probs.max()) == pytest.approx(t.confidence, abs=1e-5)
            assert t.true_class == square_frame.set_index("path").at[t.path, "label"]
            cam = compute_cams(model, model.features, x, targets=[t.pred_idx])[0]
            image = denormalize(x[0], PRE).permute(1, 2, 0).numpy()
            crop = png[t.tile_y0 : t.tile_y1, t.tile_x0 : t.tile_x1]
            assert np.abs(crop - overlay(image, cam).astype(int)).max() <= 1

    m = result.metrics
    assert m["gradcam/pointing_n"] == len(square_frame)
    assert m["gradcam/pointing_game"] >= 0.95
    assert m["gradcam/pointing_game"] > 3 * m["gradcam/pointing_random_expected"]
    assert m["gradcam/pointing_random_empirical"] < 0.3
    assert m["gradcam/deletion_gap"] > 0.1
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["metrics"]["gradcam/pointing_game"] == pytest.approx(m["gradcam/pointing_game"])
    assert manifest["tiles"] == {"correct": 6, "wrong": 3, "per_class": 6}


def test_gradcam_report_without_boxes_gives_nan_pointing(square_frame, tmp_path) -> None:
    frame = square_frame.drop(columns=["box_x0", "box_y0", "box_x1", "box_y1"]).head(8)
    card = ModelCard(name="squarenet", class_names=CLASSES, preprocess=PRE)
    result = build_gradcam_report(
        SquareNet(), card, "features", None, frame, tmp_path / "g", classes=["blue_square"]
    )
    assert np.isnan(result.metrics["gradcam/pointing_game"])
    assert result.metrics["gradcam/pointing_n"] == 0
    assert json.loads(result.manifest_path.read_text())["metrics"]["gradcam/pointing_game"] is None
    assert result.galleries["wrong"].is_file()  # a placeholder PNG, not a missing file


def test_gradcam_report_with_a_registry_cnn(square_frame, tmp_path) -> None:
    """The report's pointing game equals one recomputed outside it: every image (n_sanity above
    the frame's size), CAMs of the predicted class, boxes mapped into the input.

    Breakages tried, each fails this test: the sanity boxes taken from the previous row; the
    CAMs computed for the true instead of the predicted class; the boxes left unmapped.
    """
    torch.manual_seed(0)
    model = create_model("custom_cnn", num_classes=2, weights="none")
    spread_logits(model, PRE.input_size, seed=0)  # fresh, its CAMs and answers are all alike
    card = ModelCard(name="custom_cnn", class_names=CLASSES, preprocess=PRE)
    spec = get_model_spec("custom_cnn")
    result = build_gradcam_report(
        model, card, spec.cam_layer, spec.cam_reshape, square_frame, tmp_path / "g",
        n_per_gallery=4, per_class=2, n_sanity=64,
    )  # fmt: skip
    assert all(p.is_file() for p in result.galleries.values())
    assert result.tiles["gallery"].value_counts().to_dict()["per_class"] == 2 * len(CLASSES)

    x = _inputs(square_frame)
    with torch.no_grad():
        preds = model.eval()(x).argmax(1).tolist()
    layer = resolve_cam_layer(model, spec.cam_layer)
    cams = compute_cams(model, layer, x, preds, spec.cam_reshape)
    expected = pointing_game(cams, _boxes(square_frame))
    m = result.metrics
    assert m["gradcam/pointing_game"] == pytest.approx(expected, abs=1e-12)
    assert m["gradcam/pointing_n"] == m["gradcam/deletion_n"] == len(square_frame)
    labels = square_frame["label"].map(CLASSES.index).to_numpy()
    assert m["gradcam/accuracy_pool"] == pytest.approx(float((np.array(preds) == labels).mean()))


# ---------------------------------------------------------------------------------------------
# Every registry model with a Grad-CAM layer


def _cam_params() -> list:
    params = []
    for name in list_models():
        spec = get_model_spec(name)
        params.append(registry_param(name, slow=spec.family not in ("scratch", "transfer")))
    return params


@pytest.mark.parametrize("name", _cam_params())
def test_registry_models_give_cams(name: str) -> None:
    """Each map is a real Grad-CAM: normalised to span exactly [0, 1] (not a constant) and
    different for another target class.

    At the 32 px this test once used, a CNN's last map is 1x1 and every CAM is all zeros, which
    the range check it had (`0 <= min, max <= 1`) accepted. Breakages tried, each fails: the
    maps replaced by zeros; the targets ignored (always the predicted class).
    """
    spec = get_model_spec(name)
    # Every shipped entry has a Grad-CAM layer: one that loses it fails here, it does not skip.
    assert spec.cam_layer, f"{name} lost its Grad-CAM layer (cam_layer={spec.cam_layer!r})"
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, weights="none").eval()
    if hasattr(model, "class_embeddings"):  # zero-shot: an all-zero class matrix, no gradient
        with torch.no_grad():
            emb = torch.randn(model.class_embeddings.shape)
            model.class_embeddings.copy_(emb / emb.norm(dim=-1, keepdim=True))
    # CNNs take any size (96 px: a 3x3 last map at stride 32); ViTs keep their native size
    # (fixed position embeddings).
    size = 96 if spec.family in ("scratch", "transfer") else spec.preprocess().input_size
    layer = resolve_cam_layer(model, spec.cam_layer)
    x = torch.randn(2, 3, size, size)
    cams = compute_cams(model, layer, x, reshape=spec.cam_reshape)
    assert cams.shape == (2, size, size) and np.isfinite(cams).all()
    np.testing.assert_allclose(cams.max(axis=(1, 2)), 1.0, atol=1e-5)
    np.testing.assert_array_equal(cams.min(axis=(1, 2)), 0.0)
    with torch.no_grad():
        pred = model(x).argmax(1)
    other = compute_cams(model, layer, x, ((pred + 1) % 3).tolist(), spec.cam_reshape)
    assert np.abs(other - cams).max(axis=(1, 2)).min() > 0.05
    assert not layer._forward_hooks
