"""Grad-CAM maps for a batch of images, with the grad-cam library's hooks always released.

CAMs come from `pytorch_grad_cam.GradCAM`, constructed once per call and run batch by batch; its
hooks are released when the call ends, even on error. The target layer and the ViT token reshape
come from the model's registry entry (`ModelSpec.cam_layer`, `ModelSpec.cam_reshape`), so no
model is special-cased here.

Grad-CAM needs the gradient of the target logit at the target layer and nowhere else, so the
backward pass stops there (`gradient_stop_at`, ADR 0015): everything before the layer runs with
no autograd graph, and the graph that is kept is the layer's output up to the logits. For a CNN
whose target is its last feature map that is the pooling and the classifier, instead of every
activation of the backbone: EfficientNet-Lite0 at 224 px went from about 160 MB of retained
activations and a full depthwise-conv backward per image to a forward pass and a head.
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


@contextlib.contextmanager
def gradient_stop_at(model: nn.Module, target_layer: nn.Module) -> Iterator[None]:
    """While the block runs, autograd records nothing before `target_layer`'s output.

    The parameters stop requiring grad (their flags are restored afterwards, also on error), so
    the layers up to the target build no graph; a forward hook registered before the library's
    own hooks swaps the layer's output for a fresh leaf that requires grad (cloned, so an
    in-place op downstream cannot touch the leaf). The library then records activations and
    gradients on that leaf: the same values as a full backward gives, since the gradient of the
    target logit with respect to the layer's output depends only on what comes after it.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]

    def leaf(_module: nn.Module, _args: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"the Grad-CAM layer returns {type(output).__name__}, not a tensor; choose a "
                "layer whose output is a feature map (ModelSpec.cam_layer)"
            )
        return output.detach().requires_grad_(True).clone()

    handle = target_layer.register_forward_hook(leaf)
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        handle.remove()
        for p, flag in flags:
            p.requires_grad_(flag)


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
    # Grad-CAM needs gradients even when the caller is in no_grad or inference_mode; the
    # gradient stop makes the target layer's output a leaf that requires grad, so frozen
    # (feature-extract) backbones work too. The clone turns a possible inference tensor into a
    # normal one.
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        gradient_stop_at(model, target_layer),
        open_gradcam(model, target_layer, reshape) as cam,
    ):
        for start in range(0, n, batch_size):
            x = images[start : start + batch_size].detach().to(device).float().clone()
            tgt = None
            if targets is not None:
                tgt = [ClassifierOutputTarget(int(t)) for t in targets[start : start + batch_size]]
            out.append(np.asarray(cam(input_tensor=x, targets=tgt), dtype=np.float32))
            # The library keeps the last outputs (and through them the graph) until the next
            # call: drop them now, so two batches' graphs never live at once.
            cam.outputs = None
            cam.activations_and_grads.clear()
    if not out:
        h, w = images.shape[-2:]
        return np.zeros((0, h, w), dtype=np.float32)
    return np.clip(np.concatenate(out), 0.0, 1.0)
