"""PreciseBatchNorm replaces lagging BN running statistics with those of the training data."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from food_assets.ml.training.callbacks import PreciseBatchNorm


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen_bn = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, x):
        return self.bn(self.conv(self.frozen_bn(x)))

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen_bn.eval()  # like a frozen backbone: keeps its statistics
        return self


def test_running_stats_become_the_training_data_statistics():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 8, 8) * 3 + 5
    loader = DataLoader(TensorDataset(x, torch.zeros(64)), batch_size=16)
    net = _Net().eval()
    net.bn.running_mean.fill_(100.0)  # stale, as after a short, high-LR schedule
    frozen_before = net.frozen_bn.running_mean.clone()
    trainer = SimpleNamespace(
        sanity_checking=False, datamodule=SimpleNamespace(train_dataloader=lambda: loader)
    )
    PreciseBatchNorm(num_batches=4).on_validation_epoch_start(trainer, net)
    with torch.no_grad():
        feats = net.conv(net.frozen_bn(x))
    expected = feats.mean(dim=(0, 2, 3))
    assert torch.allclose(net.bn.running_mean, expected, atol=1e-4)
    assert torch.equal(net.frozen_bn.running_mean, frozen_before)  # frozen layer untouched
    assert net.bn.momentum == 0.1 and not net.training  # restored
