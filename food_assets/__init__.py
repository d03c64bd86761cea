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


def load_model(ref, *, precision: str = "auto", backend: str = "auto", data_dir=None):
    """A predictor for a model, as a notebook user expects: `predict(paths_or_images)` (top-k
    with labels) and `predict_array(x)` (a preprocessed float32 NCHW batch -> probabilities).

    Args:
        ref: a materialized model's name (`resnet50`), `champion` or a `models:/...` URI (the
            MLflow registry), or a path: an `onnx_<name>` folder, an `.onnx` file, a bundle.
        precision: `auto` (the fastest variant that passed its gates here), `fp32`, `bf16` or
            `int8`.
        backend: `auto`, `onnxruntime` (portable) or `openvino`.
        data_dir: the data folder (default: FOOD_ASSETS_DATA_DIR, else ./data).

    Raises:
        food_assets.ml.errors.FoodAssetsError: an unknown model, or a variant that may not be
            served (the message says why, and what to do).
    """
    from pathlib import Path

    from food_assets.ml.inference.predictor import load_predictor

    if isinstance(ref, os.PathLike) or Path(str(ref)).exists():
        return load_predictor(ref, precision=precision, backend=backend)
    from food_assets import catalog, model_registry
    from food_assets.ml.errors import ConfigError

    root = catalog.data_dir(data_dir)
    if model_registry.is_registry_reference(ref):
        entry = model_registry.registry_model(ref, root)
    else:
        found = {m.name: m for m in catalog.list_materialized(catalog.open_storage(root))}
        if ref not in found:
            known = ", ".join(sorted(found)) or "none"
            raise ConfigError(f"no materialized model {ref!r} under {root} (materialized: {known})")
        entry = found[ref]
    return catalog.load_predictor(entry, precision=precision, backend=backend)
