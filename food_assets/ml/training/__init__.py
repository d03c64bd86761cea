"""Lightning training of registry models: config, module, data module, `train_model`, and
`fit_lightning` (the registry fit hook of every Lightning-trained model).

The names below load on first use, so importing `food_assets.ml.training.config` (the settings
classes the Dagster run config is derived from) does not import Lightning.
"""

from __future__ import annotations

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "config": ["ComputeConfig", "TrainConfig", "make_config", "settings_class"],
        "fit": ["fit_hook", "fit_lightning", "fit_model"],
        "train": ["train_model"],
    },
)
