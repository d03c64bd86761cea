"""The timm pieces of the training recipe: mixup/CutMix, weight EMA, layer-wise LR decay.

timm is imported only under `ml/models/` (a ruff `banned-api` rule), so the training module
(`ml/training/module.py`) gets these objects from here rather than from timm. Each function is
a thin constructor over the timm API the timm train script uses, with the settings this project
fixes documented where they are fixed (docs/adr/0017-accuracy-recipe.md).
"""

from __future__ import annotations

from typing import Any

from torch import nn


def create_mixup(
    *, mixup_alpha: float, cutmix_alpha: float, label_smoothing: float, num_classes: int
) -> Any:
    """timm's `Mixup` in per-batch mode, label smoothing folded into its soft targets.

    With both alphas set, each batch is CutMix with probability 0.5 (timm's `switch_prob`)
    and mixup otherwise, as in the ResNet-strikes-back recipe. The batch must have an even size
    (`mix_batch` trims an odd one).
    """
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=float(mixup_alpha),
        cutmix_alpha=float(cutmix_alpha),
        label_smoothing=float(label_smoothing),
        num_classes=int(num_classes),
    )


def create_soft_target_loss() -> nn.Module:
    """Cross-entropy against soft (mixed, smoothed) targets: timm's `SoftTargetCrossEntropy`."""
    from timm.loss import SoftTargetCrossEntropy

    return SoftTargetCrossEntropy()


def create_ema(model: nn.Module, decay: float) -> nn.Module:
    """timm's `ModelEmaV3` of `model`, frozen, with the decay warm-up on.

    The warm-up (`1 - (1 + step) ** -2/3`, capped at `decay`) makes the average follow recent
    weights in a short run instead of staying near the random head it started from. Its
    parameters never require gradients: the optimizer and DDP see only the raw model.
    """
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(model, decay=float(decay), use_warmup=True)
    ema.requires_grad_(False)
    return ema


def supports_layer_decay(model: nn.Module) -> bool:
    """Whether `model` names its blocks for layer-wise decay (timm's `group_matcher`)."""
    return callable(getattr(model, "group_matcher", None))


def layer_decay_groups(
    model: nn.Module, *, lr: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise LR decay (BEiT's scheme, timm's grouping).

    Block `i` of `L` (from `group_matcher(coarse=False)`, the stem first) trains at
    `lr * layer_decay ** (L - 1 - i)`; the classifier head, in the last group, at `lr`. Biases
    and norm weights get no weight decay. Groups are returned head first (largest LR first),
    each with a `name` and its `lr_scale`.

    Raises:
        ValueError: `model` has no `group_matcher` (check `supports_layer_decay` first).
    """
    from timm.optim import param_groups_layer_decay

    if not supports_layer_decay(model):
        raise ValueError(f"{type(model).__name__} has no group_matcher for layer-wise decay")
    groups = param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay)
    out = []
    for g in sorted(groups, key=lambda g: -g["lr_scale"]):
        decay = "nd" if g["weight_decay"] == 0 else "wd"
        out.append(
            {
                "params": g["params"],
                "lr": lr * g["lr_scale"],
                "weight_decay": g["weight_decay"],
                "lr_scale": g["lr_scale"],
                "name": f"layer_x{g['lr_scale']:.3g}_{decay}",
            }
        )
    return out


__all__ = [
    "create_ema",
    "create_mixup",
    "create_soft_target_loss",
    "layer_decay_groups",
    "supports_layer_decay",
]
