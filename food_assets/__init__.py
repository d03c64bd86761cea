"""food_assets: a Dagster asset-based ML platform for food-image classification.

Kept import-light on purpose: `food-assets --help` must not import torch or Dagster.
"""

__version__ = "0.1.0"
