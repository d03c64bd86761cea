"""Lightning training of registry models: config, module, data module, `train_model`."""

from food_assets.ml.training.config import ComputeConfig, TrainConfig
from food_assets.ml.training.train import train_model

__all__ = ["ComputeConfig", "TrainConfig", "train_model"]
