"""FoodNet: the project's own CNN, trained from scratch.

A MobileNetV2-style network: a strided stem, five stages of inverted-residual blocks
(1x1 expand -> 3x3 depthwise -> 1x1 project, each with BatchNorm; an identity shortcut where
shape allows), a 1x1 head convolution, global average pooling, dropout and a linear classifier.
The activation is ReLU6, as in MobileNetV2, for the reason that paper gives: it is robust in
low precision. In an int8 ONNX export each Conv+BN+ReLU6 becomes one quantized convolution
(the clip folds into its output range), where SiLU adds an int8 Sigmoid and an int8 Mul, two
more passes over every activation map: at 224 px, batch 1, on the 2-core machine of
docs/benchmarks.md, int8 took 0.76x of the fp32 ONNX time with SiLU and 0.51x with ReLU6, and
the fp32 export itself was faster with ReLU6 (ADR 0018).
Depthwise-separable convolutions keep the cost low enough to train from scratch on one GPU in
a few hours on Food-101, and on a laptop CPU in minutes on the `sample` set.

Measured with `count_params_and_gmacs` (`ml/models/profile.py`) at 224 px:

=============  ===========  ===========
num_classes    params       GMACs
=============  ===========  ===========
101            4.15 M       0.950
10             4.04 M       0.950
=============  ===========  ===========

Measured the same way, for scale: ResNet-50 25.6 M / 4.09 GMACs, EfficientNet-B0 5.3 M /
0.39 GMACs, EfficientNet-Lite0 4.7 M / 0.39 GMACs (1000 classes). FoodNet spends more MACs than
the EfficientNets because its first expanding stage runs at 112 px.
"""

from __future__ import annotations

import torch
from torch import nn

# (out_channels, blocks, first stride, expansion) per stage; input 224 -> 7x7 at the head.
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (32, 1, 1, 1),
    (64, 2, 2, 4),
    (128, 3, 2, 4),
    (256, 3, 2, 4),
    (384, 2, 2, 4),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def _conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise (stride) -> 1x1 linear project, plus identity when it fits.

    With expansion 1 the expand conv is skipped: a plain depthwise-separable block.
    """

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.expand = _conv_bn_act(cin, mid, 1) if expansion != 1 else nn.Identity()
        self.depthwise = _conv_bn_act(mid, mid, 3, stride, groups=mid)
        # No activation after the projection: a ReLU on a narrow layer destroys information
        # (the MobileNetV2 "linear bottleneck" argument).
        self.project = _conv_bn_act(mid, cout, 1, act=False)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.use_residual else y


class FoodNet(nn.Module):
    """The from-scratch classifier behind `custom_cnn`.

    Args:
        num_classes: number of output logits.
        dropout: dropout before the classifier.
    """

    def __init__(self, num_classes: int, *, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = _conv_bn_act(3, STEM_CHANNELS, 3, stride=2)
        stages, cin = [], STEM_CHANNELS
        for cout, blocks, stride, expansion in STAGES:
            stage = [
                InvertedResidual(cin if i == 0 else cout, cout, stride if i == 0 else 1, expansion)
                for i in range(blocks)
            ]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = _conv_bn_act(cin, HEAD_CHANNELS, 1)  # Grad-CAM target: last 7x7 map
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        self.num_classes = num_classes
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        # Zero the last BN of each residual branch so every block starts as the identity:
        # deep from-scratch nets train noticeably faster (Goyal et al., 2017).
        for m in self.modules():
            if isinstance(m, InvertedResidual) and m.use_residual:
                nn.init.zeros_(m.project[1].weight)

    def get_classifier(self) -> nn.Module:
        """The head, as timm models expose it (the trainer gives it its own LR group)."""
        return self.classifier

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def build_custom_cnn(*, num_classes: int, dropout: float = 0.2) -> FoodNet:
    """Registry builder body (the weights policy is applied by the caller)."""
    return FoodNet(num_classes, dropout=dropout)
