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


def load_model(ref=None, *, precision: str = "auto", backend: str = "auto", data_dir=None):
    """A predictor for a model, as a notebook user expects: `predict(paths_or_images)` (top-k
    with labels) and `predict_array(x)` (a preprocessed float32 NCHW batch -> probabilities).

    Args:
        ref: a materialized model's name (`resnet50`), `champion` or a `models:/...` URI (the
            MLflow registry), or a path: an `onnx_<name>` folder, an `.onnx` file, a bundle;
            None: the champion (else the most accurate model, `food_assets.resolver`).
        precision: `auto` (the fastest variant that passed its gates here), `fp32`, `bf16` or
            `int8`.
        backend: `auto`, `onnxruntime` (portable) or `openvino`.
        data_dir: the data folder (default: FOOD_ASSETS_DATA_DIR, else ./data).

    Raises:
        food_assets.ml.errors.FoodAssetsError: an unknown model, or a variant that may not be
            served (the message says why, and what to do).
    """
    from food_assets import catalog
    from food_assets.resolver import resolve_model

    resolved = resolve_model(ref, data_dir)  # the one resolver (ADR 0020)
    return catalog.load_predictor(resolved.model, precision=precision, backend=backend)
