"""The weights policy for models that are not timm's (no ImageNet weights exist for them)."""

from __future__ import annotations

from torch import nn

from food_assets.ml.errors import WeightsNotFoundError
from food_assets.ml.models.weights.files import apply_weights_path, set_weights_source


def apply_weights_policy(model: nn.Module, weights: str, *, name: str) -> nn.Module:
    """Weights policy for a non-timm model (no ImageNet weights exist): `none` or a path."""
    if weights == "none":
        return set_weights_source(model, "none (random init)")
    if weights == "imagenet":
        raise WeightsNotFoundError(
            f"{name!r} is trained from scratch and has no ImageNet weights: use weights: none "
            "(mode: scratch) or the path of a checkpoint/bundle to start from"
        )
    return apply_weights_path(model, weights)
