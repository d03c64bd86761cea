"""Test-time augmentation: a wrapper module that averages a classifier's logits over views.

- `flip`: the image and its mirror (2 views), on the usual evaluation crop.
- `flip_crops`: the five crops (four corners and the centre, torchvision's `five_crop`) of the
  resized image and their mirrors (10 views, the "10-crop" evaluation of Krizhevsky et al. 2012
  and Szegedy et al. 2015). The loader then feeds the whole resized square
  (`tta_preprocess`), and the crops of the model's input size are cut from it here.

Logits, not probabilities, are averaged: the result is still a logit vector (a normalised
geometric mean of the views' probabilities), so temperature scaling, the calibration metrics
and every consumer of `Predictions` treat it exactly like a plain model's output. On a model
whose views agree the two choices pick the same class; where they disagree, the logit mean
weighs a confident view more (docs/adr/0017-accuracy-recipe.md).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import ConfigError

TTA_MODES = ("none", "flip", "flip_crops")
VIEWS = {"none": 1, "flip": 2, "flip_crops": 10}


def check_tta(mode: str) -> str:
    """`mode` if it is a TTA mode, else a ConfigError naming the choices."""
    if mode not in TTA_MODES:
        raise ConfigError(f"tta {mode!r} is not one of {', '.join(TTA_MODES)}")
    return mode


def tta_preprocess(pre: Preprocess, mode: str) -> Preprocess:
    """What the loader must produce for `mode`: the evaluation crop, or for `flip_crops` the
    whole resized square (`resize_size` pixels a side) that the crops are cut from."""
    check_tta(mode)
    if mode != "flip_crops":
        return pre
    return dataclasses.replace(pre, input_size=pre.resize_size, crop_pct=1.0)


class TestTimeAugmentation(nn.Module):
    """`model`'s logits averaged over the views of `mode` (see the module docstring).

    Args:
        model: returns `(N, C)` logits for a normalised `(N, 3, H, W)` batch.
        mode: `flip` or `flip_crops` (`none` is the model itself).
        crop_size: `flip_crops` only: the model's input side; the batch it gets is larger
            (`tta_preprocess`).
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self, model: nn.Module, mode: str, *, crop_size: int | None = None) -> None:
        super().__init__()
        if check_tta(mode) == "flip_crops" and not crop_size:
            raise ConfigError("tta flip_crops needs the model's crop_size")
        self.model = model
        self.mode = mode
        self.crop_size = crop_size

    def views(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The batches the model is run on, each `(N, 3, crop, crop)`."""
        if self.mode == "none":
            return [x]
        if self.mode == "flip":
            return [x, x.flip(-1)]
        from torchvision.transforms.v2.functional import five_crop

        crops = list(five_crop(x, [self.crop_size, self.crop_size]))
        return crops + [c.flip(-1) for c in crops]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(v) for v in self.views(x)]).mean(0)


__all__ = ["TTA_MODES", "VIEWS", "TestTimeAugmentation", "check_tta", "tta_preprocess"]
