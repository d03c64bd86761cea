"""Bugs that docs/operations.md once listed as known, each pinned by a fast test.

The other three former known issues have tests of their own (named in docs/operations.md,
"Fixed issues"): full-disk model files, concurrent bundle swaps and bad `card.json` fields.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.training.datamodule import SplitDataModule


def _loader_drops_last(n_images: int, batch_size: int, world_size: int | None) -> bool:
    dm = SplitDataModule(
        SplitManifest(path=None, class_names=["a", "b"], source="sample"),  # type: ignore[arg-type]
        Preprocess(input_size=32),
        batch_size=batch_size,
        num_workers=0,
    )
    if world_size is not None:
        dm._trainer = SimpleNamespace(world_size=world_size)  # what Lightning attaches
    ds = TensorDataset(torch.zeros(n_images, 1))
    return dm._loader(ds, train=True).drop_last  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n_images", "batch_size", "world_size", "drops"),
    [
        (18, 4, 2, True),  # 9 per rank: batches 4, 4, 1 -> the 1 would break BatchNorm
        (18, 4, 1, False),  # 18 in one process: 4 x 4 + 2, nothing to drop
        (18, 4, None, False),  # no trainer attached yet: one process
        (17, 4, 1, True),  # 17 = 4 x 4 + 1
        (18, 5, 2, False),  # 9 per rank: 5 + 4
        (1, 4, 1, False),  # one batch of one: dropping it would leave nothing
    ],
)
def test_a_trailing_batch_of_one_is_dropped_per_rank(
    n_images: int, batch_size: int, world_size: int | None, drops: bool
) -> None:
    """Breakage caught: judging the last batch on the global length instead of each DDP
    rank's share (the former known issue), or dropping batches that are not of size one."""
    assert _loader_drops_last(n_images, batch_size, world_size) is drops


def test_mlflow_tracking_uri_from_the_environment_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """Breakage caught: `default_resources()` ignoring MLFLOW_TRACKING_URI (the former known
    issue), or an explicit data folder (tests) no longer keeping MLflow inside it."""
    from food_assets.definitions import default_resources

    monkeypatch.setenv("FOOD_ASSETS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert _tracking_uri(default_resources()) == "http://mlflow.example:5000"
    inside = _tracking_uri(default_resources(str(tmp_path / "explicit")))
    assert inside == f"sqlite:///{(tmp_path / 'explicit' / 'mlflow' / 'mlflow.db').resolve()}"


def _tracking_uri(resources: dict) -> str:
    # The mlflow resource is `food_mlflow.configured({...})`: read the config it was given.
    return resources["mlflow"].apply_config_mapping({}).value["config"]["mlflow_tracking_uri"]
