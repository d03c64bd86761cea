"""Lightning training of registry models: config, module, data module, `train_model`, and
`fit_lightning` (the registry fit hook of every Lightning-trained model).

The names below load on first use, so importing `food_assets.ml.training.config` (the settings
classes the Dagster run config is derived from) does not import Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ComputeConfig": "food_assets.ml.training.config",
    "TrainConfig": "food_assets.ml.training.config",
    "fit_hook": "food_assets.ml.training.fit",
    "fit_lightning": "food_assets.ml.training.fit",
    "fit_model": "food_assets.ml.training.fit",
    "make_config": "food_assets.ml.training.config",
    "settings_class": "food_assets.ml.training.config",
    "train_model": "food_assets.ml.training.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
