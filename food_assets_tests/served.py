"""Helpers of the server and pyfunc tests: tiny real bundles, encoded images, and a real MLflow
registry in which versions are registered the way `model_<name>` registers them
(`tracking.log_fit`: the bundle under the run's `bundle/`, a logged pyfunc model, tags)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from food_assets_tests.reference import spread_logits


def png_bytes(seed: int = 0, size: tuple[int, int] = (40, 32), mode: str = "RGB") -> bytes:
    """A noise PNG (each seed gives another image, so the top classes differ)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def blank_png(size: tuple[int, int]) -> bytes:
    """A one-colour 1-bit PNG: a few hundred bytes whatever its pixel count (a pixel bomb)."""
    buf = io.BytesIO()
    Image.new("1", size).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def make_bundle(
    root: Path, class_names: list[str], *, seed: int = 0, size: int = 32, name: str = "custom_cnn"
) -> Path:
    """A real custom_cnn bundle with decisive, image-dependent answers."""
    import torch

    from food_assets.ml.data.transforms import Preprocess
    from food_assets.ml.models.bundle import ModelCard, save_bundle
    from food_assets.ml.models.registry import create_model

    torch.manual_seed(seed)
    model = create_model(name, num_classes=len(class_names), weights="none").eval()
    spread_logits(model, size, seed=seed)
    card = ModelCard(name=name, class_names=class_names, preprocess=Preprocess(input_size=size))
    return save_bundle(root, model, card)


def register_bundle(bundle: Path, uri: str, *, experiment: str = "serve_tests") -> str:
    """Log `bundle` and its pyfunc model in a new run of the store at `uri` and register it as
    a version of `food_assets.<card name>` with the tags `tracking.register_version` writes;
    the version number."""
    import mlflow

    from food_assets.ml.models.bundle import load_card
    from food_assets.tracking import runs as tracking

    card = load_card(bundle)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        # Artifacts beside the store, not in ./mlruns of whatever folder the tests run from.
        store = Path(uri.removeprefix("sqlite:///")).parent
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=(store / "artifacts").as_uri())
        mlflow.set_experiment(experiment)
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(bundle), artifact_path="bundle")
            info = tracking.log_pyfunc_model(bundle)
            version = tracking.register_logged_model(info, card, run)
    finally:
        mlflow.set_tracking_uri(before)
    return str(version.version)
