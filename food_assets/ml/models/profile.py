"""Model size and cost: parameter count and multiply-accumulates, measured, not estimated."""

from __future__ import annotations

import torch
from torch import nn


def count_params_and_gmacs(
    model: nn.Module, input_size: int | tuple[int, int]
) -> tuple[int, float]:
    """Count parameters and measure GMACs of one forward pass on a single image.

    FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, which counts the matmul and
    convolution FLOPs the dispatcher actually sees (2 per multiply-accumulate), so the figure
    follows the real graph (strides, groups, the input size) rather than a hand formula.
    Element-wise ops (BN, activations) are not counted, as is usual for GMACs tables.

    Args:
        model: any module taking a (1, 3, H, W) tensor.
        input_size: side (square) or (H, W) of the input.

    Returns:
        (number of parameters, GMACs per image) where GMACs = FLOPs / 2 / 1e9.
    """
    from torch.utils.flop_counter import FlopCounterMode

    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    params = sum(p.numel() for p in model.parameters())
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()  # BN in eval: a batch of one is fine and running stats are left untouched
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, h, w, device=device))
    finally:
        model.train(was_training)
    return params, counter.get_total_flops() / 2 / 1e9
