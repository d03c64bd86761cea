"""Shared fixtures. No test reaches the network: hub calls fail at once."""

from __future__ import annotations

import os

import pytest

# Set before anything imports huggingface_hub / timm / open_clip.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A private data folder for a test: artifacts, generated sources, MLflow store."""
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("FOOD_ASSETS_DATA_DIR", str(path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return path


@pytest.fixture
def resources(data_dir):
    """The code location's resources, pointed at the test's data folder."""
    from food_assets.resources import default_resources

    return default_resources()


@pytest.fixture(scope="session")
def small_sample_config():
    """Run config for the data assets: a small sample set that still trains in seconds."""
    return {
        "food_images_raw": {
            "config": {"sample_num_classes": 4, "sample_images_per_class": 16, "sample_image_size": 64}
        }
    }
