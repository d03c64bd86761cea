"""Model registry, builders, weights and the trained-model bundle format.

The only package allowed to import timm and open_clip.
"""

from food_assets.ml.models.registry import (
    ModelSpec,
    create_model,
    get_model_spec,
    list_models,
)

__all__ = ["ModelSpec", "create_model", "get_model_spec", "list_models"]
