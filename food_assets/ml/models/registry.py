"""Name -> ModelSpec registry: one entry says everything about a model.

Training, evaluation, Grad-CAM, ONNX export, `predict` and the demo all read the spec, and the
Dagster asset factories loop over `list_models()`, so adding a model is one `register(...)` call
in a zoo module (`zoo.py` for the CNNs, `clip/__init__.py` for CLIP) and no new asset code.

A spec is data plus two hooks:

- data: preprocessing, the Grad-CAM layer, ONNX support, where pretrained weights come from
  (`weight_sources`, `WeightSource` records), the settings class (`config_cls`, a dataclass whose
  fields carry their defaults and descriptions; the Dagster run config is derived from it; None:
  the Lightning trainer's) and per-model overrides of its defaults (`config_defaults`);
- hooks: `build(*, num_classes, weights, **kwargs) -> nn.Module` and
  `fit(spec, splits, config, out_dir, context) -> FitResult` (None: Lightning).

Nothing outside a spec branches on what kind of model it is: the Dagster asset, the CLI and the
training code call `food_assets.ml.training.fit_model(spec, ...)` with
`food_assets.ml.training.make_config(spec, ...)`; an entry without hooks trains with Lightning.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import UnknownModelError
from food_assets.ml.models.weights.sources import WeightSource

Family = Literal["scratch", "transfer", "zero_shot", "probe"]

#: The key of a config dataclass field's description (`setting(...)` puts it there).
DESCRIPTION = "description"
#: The key of the type a field takes in run config, where it differs from the dataclass type.
CONFIG_TYPE = "config_type"


def setting(
    default: Any = MISSING,
    *,
    description: str,
    default_factory: Any = MISSING,
    config_type: Any = None,
) -> Any:
    """A field of a config dataclass, with the description run config and `--help` show.

    Args:
        default / default_factory: as `dataclasses.field`.
        description: one line for the user; the Dagster config schema shows it.
        config_type: the type run config takes when the dataclass type has no run-config form
            (`int | str` -> `str`); the dataclass must then accept that form and normalise it.
    """
    metadata: dict[str, Any] = {DESCRIPTION: description}
    if config_type is not None:
        metadata[CONFIG_TYPE] = config_type
    return field(default=default, default_factory=default_factory, metadata=metadata)


def _log_warning(message: str) -> None:
    logging.getLogger("food_assets.ml.fit").warning("%s", message)


@dataclass(frozen=True)
class FitContext:
    """What a fit hook gets from its caller besides the data and the config.

    Attributes:
        compute: where Lightning runs (a `food_assets.ml.training.ComputeConfig`); None: its
            defaults. Fits that do not use Lightning ignore it.
        loggers: Lightning loggers (e.g. an `MLFlowLogger` on the caller's run).
        feature_cache_dir: where fits that extract frozen features may cache them; None: none.
        log: how a fit tells its caller about a decision (a fallback, a skip); the Dagster
            asset passes its `context.log.warning`.
    """

    compute: Any = None
    loggers: Sequence[Any] = ()
    feature_cache_dir: Path | None = None
    log: Callable[[str], None] = _log_warning


class FitSkipped(Exception):  # noqa: N818  (a decision, not an error)
    """A fit hook declines to run, as its config asked (`on_missing_weights: skip`).

    Not a `FoodAssetsError`: nothing is wrong. The Dagster asset turns it into a `Skipped` value
    (ADR 0002) with `reason` in its metadata.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: fit(spec, splits, config, out_dir, context) -> FitResult (`ml/models/bundle.py`).
FitHook = Callable[..., Any]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the platform needs to know about one model.

    Attributes:
        name: registry key; also the suffix of the `model_<name>` asset.
        family: `scratch` / `transfer` train with Lightning; `zero_shot` builds a classifier from
            text prompts; `probe` fits a linear head on frozen features. A label (tags, the
            model list): what a model does is in `fit` and `config_cls`, not in its family.
        build: `build(*, num_classes, weights, **kwargs) -> nn.Module` returning logits.
        preprocess: lazy, so that importing the registry does not build models.
        cam_layer: `model.get_submodule` path of the Grad-CAM target layer; None disables it.
        config_cls: the dataclass of the model's settings (`ClipConfig`); None: the Lightning
            trainer's `TrainConfig` (`food_assets.ml.training.settings_class` decides). Its
            fields' defaults and descriptions are the single source the Dagster run config is
            derived from.
        fit: `fit(spec, splits, config, out_dir, context) -> FitResult`: makes the model's
            bundle under `out_dir`; may raise `FitSkipped`. None: trained with Lightning
            (`food_assets.ml.training.fit_model` decides). A default, not a name of the training
            package: `ml.training` imports this package, never the reverse (ADR 0020).
        cam_reshape: turns a ViT's token activations into (N, C, H, W) for Grad-CAM.
        onnx: whether the model exports to ONNX.
        default_weights: `imagenet`, `none`, `openai` or a path.
        description: one line for the model list and the asset.
        weight_sources: where `imagenet` weights come from, tried in order (timm models).
        config_defaults: this model's defaults that differ from `config_cls`'s
            (`{"arch": "ViT-L-14"}`).
        kinds: tool labels (the Dagster UI shows them as the asset's kinds).
        accuracy_floors: the minimum test top-1 accuracy per data source (`food101`, `sample`)
            that `evaluation_<name>`'s blocking check enforces and the champion rule requires;
            a source not listed gets chance plus a little. `QualityGates.accuracy` overrides it
            per run. Here, with the model, so that adding a model is one entry.
        cpu_bf16: whether bf16 autocast speeds up this architecture's training on a CPU with
            native bf16 (`precision: auto` picks bf16-mixed there only if so). False for the
            depthwise-convolution nets, which train slower under bf16 on CPU
            (`benchmarks/training_throughput.py --bf16`, docs/benchmarks.md).
    """

    name: str
    family: Family
    build: Callable[..., nn.Module]
    preprocess: Callable[[], Preprocess]
    cam_layer: str | None
    config_cls: type | None = None
    fit: FitHook | None = None
    cam_reshape: Callable | None = None
    onnx: bool = True
    default_weights: str = "imagenet"
    description: str = ""
    weight_sources: tuple[WeightSource, ...] = ()
    config_defaults: Mapping[str, Any] = field(default_factory=dict, compare=False)
    kinds: tuple[str, ...] = ("pytorch",)
    cpu_bf16: bool = True
    accuracy_floors: Mapping[str, float] = field(default_factory=dict, compare=False)


_REGISTRY: dict[str, ModelSpec] = {}
# Modules whose import registers entries. Kept as strings so that the import is lazy.
_ZOO_MODULES = ("food_assets.ml.models.zoo", "food_assets.ml.models.clip")
_loaded = False


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> ModelSpec:
    """Remove an entry (tests that register a model of their own take it out again)."""
    _load()
    try:
        return _REGISTRY.pop(name)
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}: nothing to unregister") from None


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _ZOO_MODULES:
        importlib.import_module(module)


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
