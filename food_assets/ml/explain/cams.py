"""Grad-CAM maps for a batch of images, with the grad-cam library's hooks always released.

CAMs come from `pytorch_grad_cam.GradCAM`, constructed once per call and run batch by batch; its
hooks are released when the call ends, even on error. The target layer and the ViT token reshape
come from the model's registry entry (`ModelSpec.cam_layer`, `ModelSpec.cam_reshape`), so no
model is special-cased here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


@contextlib.contextmanager
def open_gradcam(
    model: nn.Module, target_layer: nn.Module, reshape: Callable | None = None
) -> Iterator[Any]:
    """A `pytorch_grad_cam.GradCAM` whose hooks are removed when the block ends.

    The library's own `__exit__` swallows `IndexError` (it prints and returns True), which would
    hide real bugs here; this releases the hooks in a `finally` instead.
    """
    from pytorch_grad_cam import GradCAM

    cam = GradCAM(model=model, target_layers=[target_layer], reshape_transform=reshape)
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()


def compute_cams(
    model: nn.Module,
    target_layer: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int] | None = None,
    reshape: Callable | None = None,
    *,
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM maps for a batch of normalised images.

    Args:
        model: returns logits; put in eval mode (the library does it) and left there.
        target_layer: the module whose activations are weighted (`resolve_cam_layer`).
        images: `(N, 3, H, W)` normalised inputs.
        targets: class index per image; None explains each image's predicted class.
        reshape: ViT tokens -> `(N, C, h, w)` (the registry's `cam_reshape`).
        batch_size: images per forward/backward pass.

    Returns:
        `(N, H, W)` float32 maps in [0, 1], each scaled to its own maximum.
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    n = len(images)
    if targets is not None and len(targets) != n:
        raise ValueError(f"{n} images but {len(targets)} targets")
    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    # Grad-CAM needs gradients even when the caller is in no_grad or inference_mode, and even when
    # the backbone is frozen (feature-extract mode): an input that requires grad makes the
    # activations require it. The clone turns a possible inference tensor into a normal one.
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        open_gradcam(model, target_layer, reshape) as cam,
    ):
        for start in range(0, n, batch_size):
            x = images[start : start + batch_size].detach().to(device).float().clone()
            x.requires_grad_(True)
            tgt = None
            if targets is not None:
                tgt = [ClassifierOutputTarget(int(t)) for t in targets[start : start + batch_size]]
            out.append(np.asarray(cam(input_tensor=x, targets=tgt), dtype=np.float32))
    if not out:
        h, w = images.shape[-2:]
        return np.zeros((0, h, w), dtype=np.float32)
    return np.clip(np.concatenate(out), 0.0, 1.0)
