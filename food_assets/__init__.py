"""food_assets: a Dagster asset-based ML platform for food-image classification.

Kept import-light on purpose: `food-assets --help` must not import torch or Dagster.
"""

import os

# OpenMP threads that busy-wait make PyTorch 10-30x slower whenever the cores are shared (two
# Dagster steps on a 2-core laptop, a DataLoader worker, a test runner): measured 9 s instead of
# 0.3 s per training step here. Passive waiting costs nothing when the cores are free. Set
# before torch loads libgomp; a value the user chose wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
