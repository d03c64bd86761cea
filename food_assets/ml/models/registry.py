"""Name -> ModelSpec registry: one entry says everything about a model.

Training, evaluation, Grad-CAM, ONNX export, `predict` and the demo all read the spec, and the
Dagster asset factories loop over `list_models()`, so adding a model is one `register(...)` call
in a zoo module (`zoo.py` for the CNNs, `clip/__init__.py` for CLIP) and no new asset code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import UnknownModelError

Family = Literal["scratch", "transfer", "zero_shot", "probe"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the platform needs to know about one model.

    Attributes:
        name: registry key; also the suffix of the `model_<name>` asset.
        family: `scratch` / `transfer` train with Lightning; `zero_shot` builds a classifier from
            text prompts; `probe` fits a linear head on frozen features.
        build: `build(*, num_classes, weights, **kwargs) -> nn.Module` returning logits.
        preprocess: lazy, so that importing the registry does not build models.
        cam_layer: `model.get_submodule` path of the Grad-CAM target layer; None disables it.
        cam_reshape: turns a ViT's token activations into (N, C, H, W) for Grad-CAM.
        onnx: whether the model exports to ONNX.
        default_weights: `imagenet`, `none`, `openai` or a path.
    """

    name: str
    family: Family
    build: Callable[..., nn.Module]
    preprocess: Callable[[], Preprocess]
    cam_layer: str | None
    cam_reshape: Callable | None = None
    onnx: bool = True
    default_weights: str = "imagenet"
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}
# Modules whose import registers entries. Kept as strings so that the import is lazy.
_ZOO_MODULES = ("food_assets.ml.models.zoo", "food_assets.ml.models.clip")
_loaded = False


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _ZOO_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency, not a zoo module yet to be written
                raise


def list_models(family: Family | None = None) -> list[str]:
    _load()
    return [n for n, s in _REGISTRY.items() if family is None or s.family == family]


def get_model_spec(name: str) -> ModelSpec:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise UnknownModelError(f"unknown model {name!r}; known models: {known}") from None


def create_model(name: str, *, num_classes: int, weights: str = "none", **kwargs) -> nn.Module:
    """Build a registry model with `num_classes` outputs (see `ModelSpec.build`)."""
    return get_model_spec(name).build(num_classes=num_classes, weights=weights, **kwargs)


def resolve_cam_layer(model: nn.Module, path: str) -> nn.Module:
    """`model.get_submodule(path)`, where a segment may be a negative index into a container.

    `"visual.transformer.resblocks.-1.ln_1"` names the last block whatever the depth, so one
    registry entry serves every CLIP width/depth.
    """
    module: nn.Module = model
    for part in path.split("."):
        if part.lstrip("-").isdigit() and isinstance(module, (nn.ModuleList, nn.Sequential)):
            module = module[int(part)]
        else:
            try:
                module = getattr(module, part)
            except AttributeError:
                raise ValueError(f"{type(model).__name__} has no submodule {path!r}") from None
        if not isinstance(module, nn.Module):
            raise ValueError(f"{path!r} does not name a module of {type(model).__name__}")
    return module
