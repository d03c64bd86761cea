"""Test-time augmentation's views and mean, against views cut by hand with tensor slicing (no
torchvision), and its refusals. Fast: a linear model where every pixel has its own weight."""

from __future__ import annotations

import pytest
import torch

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import ConfigError
from food_assets.ml.evaluation.tta import (
    TTA_MODES,
    VIEWS,
    TestTimeAugmentation,
    check_tta,
    tta_preprocess,
)

S = 8  # crop side; the flip_crops input is 12 px, so corner crops and the centre all differ


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * S * S, 5)).eval()


def _hand_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    if mode == "none":
        return [x]
    if mode == "flip":
        return [x, x[..., torch.arange(x.shape[-1] - 1, -1, -1)]]
    h, w = x.shape[-2:]
    tops = [(0, 0), (0, w - S), (h - S, 0), (h - S, w - S), ((h - S) // 2, (w - S) // 2)]
    crops = [x[..., a : a + S, b : b + S] for a, b in tops]
    return crops + [c[..., torch.arange(S - 1, -1, -1)] for c in crops]


@pytest.mark.parametrize("mode", TTA_MODES)
def test_tta_is_the_mean_logit_over_the_hand_cut_views(mode: str) -> None:
    """Breakage seen failing: the mirror taken along the height (`flip(-2)`), the mean replaced
    by the first view, a view dropped, VIEWS out of step with the views."""
    model = _model()
    size = S if mode != "flip_crops" else S + 4
    x = torch.randn(3, 3, size, size)
    tta = TestTimeAugmentation(model, mode, crop_size=S if mode == "flip_crops" else None)
    views = tta.views(x)
    hand = _hand_views(x, mode)
    assert len(views) == len(hand) == VIEWS[mode]
    for got, want in zip(views, hand, strict=True):
        torch.testing.assert_close(got, want)
    with torch.no_grad():
        expected = torch.stack([model(v) for v in hand]).mean(0)
        torch.testing.assert_close(tta(x), expected)
        if mode != "none":  # the views really differ: the mean is not any single one
            assert not torch.allclose(tta(x), model(hand[0]))


def test_tta_refuses_bad_modes_and_flip_crops_without_a_size() -> None:
    """Breakage seen failing: an unknown mode accepted, flip_crops built without crop_size."""
    with pytest.raises(ConfigError, match="tta 'mirror' is not one of none, flip, flip_crops"):
        check_tta("mirror")
    with pytest.raises(ConfigError, match="^tta flip_crops needs the model's crop_size$"):
        TestTimeAugmentation(_model(), "flip_crops")
    assert [check_tta(m) for m in TTA_MODES] == list(TTA_MODES)
    TestTimeAugmentation(_model(), "flip")  # no crop size needed


def test_tta_preprocess_feeds_the_whole_resized_square_only_for_crops() -> None:
    """Breakage seen failing: crop_pct kept at 0.875 for flip_crops (the loader would cut a
    centre crop first), the evaluation crop replaced for `flip` too."""
    pre = Preprocess(input_size=224, crop_pct=0.875)
    assert tta_preprocess(pre, "none") is pre and tta_preprocess(pre, "flip") is pre
    wide = tta_preprocess(pre, "flip_crops")
    assert (wide.input_size, wide.crop_pct, wide.resize_size) == (256, 1.0, 256)
    assert (wide.mean, wide.interpolation) == (pre.mean, pre.interpolation)
    with pytest.raises(ConfigError):
        tta_preprocess(pre, "ten_crop")
