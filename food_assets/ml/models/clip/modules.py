"""The two CLIP `nn.Module`s and their registry builders.

- `ClipZeroShotClassifier` (`clip_zero_shot`, family `zero_shot`): the image tower plus a
  class-embedding matrix built ONCE from prompt templates (a buffer, so the bundle carries it).
  Inference never touches the text tower: logits = logit_scale * normalize(visual(x)) @ M.T.
- `ClipLinearProbe` (`clip_linear_probe`, family `probe`): the frozen image tower plus a linear
  head whose weights are copied from a scikit-learn logistic regression (see `fit.py`).

Rebuilding from a bundle (`build(num_classes=..., weights="none", **build_kwargs)`) needs neither
text nor network: `build_kwargs` hold the architecture name and, for a custom architecture, its
open_clip model config dict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from food_assets.ml.errors import CheckpointError, ConfigError
from food_assets.ml.models.clip.config import DEFAULT_ARCH, DEFAULT_TEMPLATES, ClipConfig
from food_assets.ml.models.clip.loading import _create_open_clip, load_clip, register_arch
from food_assets.ml.models.clip.text import (
    ClassEmbeddings,
    build_class_embeddings,
    check_class_order,
)


def _embed_dim(visual: nn.Module) -> int:
    dim = getattr(visual, "output_dim", None)
    if isinstance(dim, int):
        return dim
    raise ConfigError(f"cannot tell the embedding width of {type(visual).__name__}")


class ClipZeroShotClassifier(nn.Module):
    """Image tower + cached class matrix: logits = logit_scale * normalize(visual(x)) @ M.T.

    The text tower is not part of the module: the matrix was encoded once, and the state dict
    (hence the bundle) carries it as the buffer `class_embeddings`.
    """

    def __init__(
        self,
        visual: nn.Module,
        class_embeddings: torch.Tensor,
        *,
        logit_scale: float,
        class_names: Sequence[str],
    ) -> None:
        super().__init__()
        if class_embeddings.ndim != 2 or class_embeddings.shape[0] != len(class_names):
            raise ConfigError(
                f"class matrix of shape {tuple(class_embeddings.shape)} does not fit "
                f"{len(class_names)} class names"
            )
        self.visual = visual
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=-1))
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.class_names = tuple(class_names)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.encode_image(x) @ self.class_embeddings.T

    def set_class_embeddings(self, emb: ClassEmbeddings) -> None:
        """Swap in another matrix; its class order must be this classifier's."""
        check_class_order(emb.class_names, self.class_names, what="the class-embedding matrix")
        if emb.matrix.shape != self.class_embeddings.shape:
            raise CheckpointError(
                f"class matrix {tuple(emb.matrix.shape)} does not fit this model "
                f"{tuple(self.class_embeddings.shape)} (another CLIP architecture?)"
            )
        with torch.no_grad():
            self.class_embeddings.copy_(F.normalize(emb.matrix.float(), dim=-1))


class ClipLinearProbe(nn.Module):
    """Frozen image tower + a linear head on L2-normalised features.

    "Frozen" means the head is fitted by scikit-learn on cached features and nothing here is
    trained; the tower's parameters keep `requires_grad` so that Grad-CAM can still backpropagate.
    """

    def __init__(
        self, visual: nn.Module, num_classes: int, class_names: Sequence[str] | None = None
    ):
        super().__init__()
        self.visual = visual
        self.head = nn.Linear(_embed_dim(visual), num_classes)
        self.class_names = (
            tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))
        )

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode_image(x))

    def set_head_from_sklearn(self, coef: Any, intercept: Any) -> None:
        """Copy a fitted `LogisticRegression` so that logits == its decision_function.

        Binary problems have one row (`d = w.x + b`); it becomes [-d/2, +d/2], whose softmax is
        sklearn's sigmoid probability and whose difference is `d`.
        """
        w = torch.as_tensor(coef, dtype=torch.float32)
        b = torch.as_tensor(intercept, dtype=torch.float32)
        if w.shape[0] == 1 and self.head.out_features == 2:
            w, b = torch.cat([-w / 2, w / 2]), torch.cat([-b / 2, b / 2])
        if tuple(w.shape) != tuple(self.head.weight.shape):
            raise ConfigError(
                f"coefficients {tuple(w.shape)} do not fit the head {tuple(self.head.weight.shape)}"
            )
        with torch.no_grad():
            self.head.weight.copy_(w)
            self.head.bias.copy_(b)


def vit_tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
    """Grad-CAM reshape for open_clip ViTs: (N, 1 + H*W, C) tokens -> (N, C, H, W).

    open_clip 3.x runs its transformer batch-first (`Transformer(batch_first=True)`), and the
    class token is token 0; it is dropped, the patch tokens form the square grid.
    """
    if tokens.ndim != 3:
        raise ValueError(f"expected (N, tokens, C) activations, got shape {tuple(tokens.shape)}")
    patches = tokens[:, 1:, :]
    n, length, c = patches.shape
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(f"{length} patch tokens do not form a square grid")
    return patches.reshape(n, side, side, c).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------
# Registry builders
# --------------------------------------------------------------------------------------------


def _config_for_build(
    arch: str,
    weights: str,
    model_cfg: dict[str, Any] | None,
    quick_gelu: bool | None,
    checkpoint: str | None,
) -> ClipConfig:
    return ClipConfig(
        arch=arch,
        weights=weights,
        model_cfg=model_cfg,
        quick_gelu=quick_gelu,
        checkpoint=checkpoint,
    )


def _architecture_only(arch: str, model_cfg: dict[str, Any] | None, quick_gelu: bool) -> nn.Module:
    register_arch(arch, model_cfg)
    return _create_open_clip(arch, checkpoint=None, quick_gelu=quick_gelu)


def build_clip_zero_shot(
    *,
    num_classes: int,
    weights: str = "none",
    arch: str = DEFAULT_ARCH,
    model_cfg: dict[str, Any] | None = None,
    quick_gelu: bool | None = None,
    class_names: Sequence[str] | None = None,
    checkpoint: str | None = None,
) -> ClipZeroShotClassifier:
    """Registry builder.

    `weights="none"`: the architecture only, with a zero class matrix, ready for a bundle's state
    dict (no text, no network). Otherwise loads the weights and encodes the default templates for
    `class_names` (a convenience for notebooks; the asset uses `fit_clip_zero_shot`).
    """
    names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise ConfigError(f"{len(names)} class names for num_classes={num_classes}")
    if weights == "none":
        model = _architecture_only(arch, model_cfg, bool(quick_gelu))
        dim = _embed_dim(model.visual)
        return ClipZeroShotClassifier(
            model.visual, torch.zeros(num_classes, dim), logit_scale=100.0, class_names=names
        )
    if not class_names:
        raise ConfigError("a pretrained clip_zero_shot needs `class_names` to encode its prompts")
    loaded = load_clip(_config_for_build(arch, weights, model_cfg, quick_gelu, checkpoint))
    emb = build_class_embeddings(loaded, names, DEFAULT_TEMPLATES)
    return ClipZeroShotClassifier(
        loaded.model.visual,
        emb.matrix,
        logit_scale=float(loaded.model.logit_scale.detach().exp()),
        class_names=names,
    )


def build_clip_linear_probe(
    *,
    num_classes: int,
    weights: str = "none",
    arch: str = DEFAULT_ARCH,
    model_cfg: dict[str, Any] | None = None,
    quick_gelu: bool | None = None,
    class_names: Sequence[str] | None = None,
    checkpoint: str | None = None,
) -> ClipLinearProbe:
    """Registry builder: image tower (random with `weights="none"`) + an unfitted linear head."""
    if weights == "none":
        visual = _architecture_only(arch, model_cfg, bool(quick_gelu)).visual
    else:
        visual = load_clip(
            _config_for_build(arch, weights, model_cfg, quick_gelu, checkpoint)
        ).model.visual
    return ClipLinearProbe(visual, num_classes, class_names)
