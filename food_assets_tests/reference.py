"""What a prediction surface must report, computed without it: the bundle's own network.

`reference_top_k` loads the bundle with `load_bundle`, runs the network in eager PyTorch on the
preprocessed tensor, takes `softmax(logits / temperature)` and maps the ranks through the card's
class names. The predictor, the CLI and the demo are compared against it, so a surface that
reverses the class names, drops the temperature or mis-orders its results gives another answer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest
import torch
from PIL import Image

TopK = list[tuple[str, float]]


@torch.no_grad()
def spread_logits(
    model: torch.nn.Module, input_size: int, *, seed: int = 0, logit_std: float = 2.0
) -> torch.nn.Module:
    """Make an untrained classifier's answers decisive and image-dependent, in place.

    A fresh network's eval-mode BatchNorm (running var 1) leaves pooled features near 1e-8, so
    every class gets 1/C whatever the image and no test can tell one class order from another.
    Fitting the BatchNorm statistics to seeded noise images brings the features to order 1; a
    seeded random head scaled to `logit_std` then spreads the logits over a few units, so the
    temperature matters and the top classes differ from image to image.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, input_size, input_size, generator=g)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches seen
    model.train()
    model(x)
    model.eval()
    head = model.get_classifier()
    head.weight.copy_(torch.randn(head.weight.shape, generator=g))
    head.bias.copy_(torch.randn(head.bias.shape, generator=g))
    scale = logit_std / model(x).std().item()
    head.weight.mul_(scale)
    head.bias.mul_(scale)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1  # the default again, so a saved copy trains as usual
    return model


def reference_top_k(
    bundle_dir: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str] | Image.Image],
    k: int | None = None,
    *,
    temperature: float | None = None,
) -> list[TopK]:
    """Per image, the top-`k` `(class, probability)` pairs, best first (all classes by default).

    Args:
        bundle_dir: a model bundle folder (card.json + model.safetensors).
        images: file paths (decoded as `predict_paths` does) or decoded PIL images.
        k: classes per image; None: all of them.
        temperature: overrides the card's (to check that the answer depends on it).
    """
    from food_assets.ml.data.transforms import ImagePipeline
    from food_assets.ml.models.bundle import load_bundle

    model, card = load_bundle(bundle_dir)
    pipe = ImagePipeline(card.preprocess, train=False)
    x = torch.stack(
        [pipe.from_image(im) if isinstance(im, Image.Image) else pipe(im) for im in images]
    )
    t = card.temperature if temperature is None else temperature
    with torch.no_grad():
        probs = torch.softmax(model.eval()(x).double() / t, dim=1)
    k = len(card.class_names) if k is None else k
    out = []
    for row in probs:
        values, index = torch.topk(row, k)  # sorted, best first
        out.append(
            [(card.class_names[i], float(v)) for v, i in zip(values, index.tolist(), strict=True)]
        )
    return out


def assert_top_k_matches(actual: TopK, expected: TopK, tol: float = 1e-5) -> None:
    """Same classes in the same order, each probability within `tol`."""
    assert [c for c, _ in actual] == [c for c, _ in expected], (actual, expected)
    for (c, p), (_, q) in zip(actual, expected, strict=True):
        assert p == pytest.approx(q, abs=tol), (c, p, q)


def assert_reference_discriminates(
    bundle_dir: str | os.PathLike[str], images: Sequence, expected: list[TopK]
) -> None:
    """Guard for the fixture itself: its answers must change when names are reversed or the
    temperature is dropped, and its ranks must be clear of ties, else the comparisons prove
    nothing."""
    from food_assets.ml.models.bundle import load_card

    card = load_card(bundle_dir)
    assert card.temperature != 1.0
    names = list(card.class_names)
    flip = dict(zip(names, reversed(names), strict=True))
    assert any(flip[top[0][0]] != top[0][0] for top in expected), "reversal keeps every top-1"
    untempered = reference_top_k(bundle_dir, images, temperature=1.0)
    for top, plain in zip(expected, untempered, strict=True):
        assert abs(top[0][1] - plain[0][1]) > 1e-3
        gaps = [a[1] - b[1] for a, b in zip(top[:-1], top[1:], strict=True)]
        assert min(gaps) > 1e-4, f"near-tie in {top}: the order is not a stable answer"


def reference_pointing_game(
    bundle_dir: str | os.PathLike[str], frame, cam_layer: str, cam_reshape=None
) -> tuple[float, int]:
    """Pointing game of a bundle over every row of a split frame, recomputed outside the
    Grad-CAM report: CAMs of the predicted class, boxes mapped into the model input.

    Returns:
        (hit rate, number of images with a box).
    """
    import numpy as np

    from food_assets.ml.data.transforms import ImagePipeline
    from food_assets.ml.explain import compute_cams, map_box_to_input, pointing_game
    from food_assets.ml.models.bundle import load_bundle
    from food_assets.ml.models.registry import resolve_cam_layer

    model, card = load_bundle(bundle_dir)
    pre = card.preprocess
    pipe = ImagePipeline(pre, train=False)
    x = torch.stack([pipe(p) for p in frame["path"]])
    with torch.no_grad():
        preds = model.eval()(x).argmax(1).tolist()
    layer = resolve_cam_layer(model, cam_layer)
    # The report's batch size: the same batches give the same floating-point CAMs.
    cams = compute_cams(model, layer, x, preds, cam_reshape, batch_size=32)
    boxes = np.array(
        [
            map_box_to_input(
                (r.box_x0, r.box_y0, r.box_x1, r.box_y1), int(r.width), int(r.height), pre
            )
            for r in frame.itertuples()
        ],
        dtype=float,
    )
    return pointing_game(cams, boxes), int(np.isfinite(boxes).all(axis=1).sum())
