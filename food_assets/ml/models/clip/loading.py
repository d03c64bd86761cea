"""Loading the open_clip model with its preprocessing (`load_clip`), and preprocessing alone.

`load_clip` resolves the weights (`weights.py`: offline-first, never a silent random init),
registers the architecture (`arch.py`) and builds both towers with the preprocessing open_clip
pairs with those weights, so it is derived, never retyped. The weights and architecture names
are re-exported here, where callers have always imported them from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import CheckpointError, ConfigError
from food_assets.ml.models.clip.arch import canonical, digest, register_arch
from food_assets.ml.models.clip.config import DEFAULT_ARCH, DEFAULT_PRETRAINED, ClipConfig
from food_assets.ml.models.clip.weights import (
    ResolvedWeights,
    clip_weights_available,
    resolve_clip_weights,
)


def preprocess_from_open_clip(pp: Mapping[str, Any]) -> Preprocess:
    """open_clip's preprocess config -> `Preprocess` (never retyped by hand).

    open_clip evaluates with resize-shortest-side-to-size then centre crop, i.e. crop_pct 1.0.
    `squash`/`longest` resize modes (SigLIP, CLIPA) have no `Preprocess` equivalent and are
    approximated by that same resize-and-crop.
    """
    size = pp.get("size", 224)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ConfigError(f"non-square CLIP input {tuple(size)} is not supported")
        size = size[0]
    return Preprocess(
        input_size=int(size),
        mean=tuple(float(v) for v in pp["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in pp["std"]),  # type: ignore[arg-type]
        interpolation=str(pp.get("interpolation", "bicubic")),
        crop_pct=1.0,
    )


def default_preprocess(
    arch: str = DEFAULT_ARCH, tag: str | None = DEFAULT_PRETRAINED
) -> Preprocess:
    """Preprocess of an architecture/tag from open_clip's configs, without building the model."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    pp = merge_preprocess_dict(
        PreprocessCfg(), open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    )
    model_cfg = open_clip.get_model_config(arch) or {}
    pp["size"] = model_cfg.get("vision_cfg", {}).get("image_size", pp["size"])
    return preprocess_from_open_clip(pp)


@dataclass
class LoadedClip:
    """An open_clip model with what the fit functions need around it."""

    model: nn.Module
    tokenizer: Callable[..., torch.Tensor]
    preprocess: Preprocess
    weights: ResolvedWeights
    arch: str
    model_cfg: dict[str, Any] | None
    quick_gelu: bool
    resize_mode: str = "shortest"

    @property
    def model_id(self) -> str:
        if self.model_cfg is None:
            return self.arch + (
                "-quickgelu" if self.quick_gelu and "quickgelu" not in self.arch else ""
            )
        return f"{self.arch}@{digest(self.model_cfg)[:12]}"

    def build_kwargs(self) -> dict[str, Any]:
        """What `build(num_classes=..., weights="none", **kw)` needs to rebuild offline."""
        return {"arch": self.arch, "model_cfg": self.model_cfg, "quick_gelu": self.quick_gelu}


def _create_open_clip(
    arch: str,
    *,
    checkpoint: Path | None,
    quick_gelu: bool,
    preprocess_overlay: Mapping[str, Any] | None = None,
) -> nn.Module:
    import open_clip

    try:
        model = open_clip.create_model(
            arch,
            pretrained=str(checkpoint) if checkpoint else None,
            # No hub look-ups for tower weights: an architecture-only build must stay offline.
            pretrained_image=False,
            pretrained_text=False,
            force_quick_gelu=quick_gelu,
            force_preprocess_cfg=dict(preprocess_overlay or {}) or None,
            weights_only=True,
        )
    except RuntimeError as exc:
        if checkpoint is None:
            raise
        raise CheckpointError(
            f"{checkpoint} does not fit open_clip architecture {arch!r}: "
            f"{str(exc).splitlines()[0][:300]}. Set `arch` to the architecture the file was "
            "trained with."
        ) from exc
    return model.eval()


def load_clip(cfg: ClipConfig) -> LoadedClip:
    """Resolve the weights and build the full open_clip model (both towers), eval mode, on CPU."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    weights = resolve_clip_weights(cfg)
    arch = cfg.arch
    base_cfg = open_clip.get_model_config(arch) or {}
    quick_gelu = (
        bool(cfg.quick_gelu)
        if cfg.quick_gelu is not None
        else bool(weights.tag_cfg.get("quick_gelu", False) or base_cfg.get("quick_gelu", False))
    )
    overlay = merge_preprocess_dict(PreprocessCfg(), weights.tag_cfg) if weights.tag_cfg else None
    if overlay is not None:
        overlay.pop("size", None)  # the size comes from the architecture
    # Random init is seeded without disturbing the caller's RNG, so the same config gives the
    # same random weights (and the feature cache can key on the seed).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = _create_open_clip(
            arch, checkpoint=weights.checkpoint, quick_gelu=quick_gelu, preprocess_overlay=overlay
        )
    pp = open_clip.get_model_preprocess_cfg(model)
    tokenizer = open_clip.get_tokenizer(arch, context_length=getattr(model, "context_length", None))
    return LoadedClip(
        model=model,
        tokenizer=tokenizer,
        preprocess=preprocess_from_open_clip(pp),
        weights=weights,
        arch=arch,
        model_cfg=canonical(dict(cfg.model_cfg)) if cfg.model_cfg is not None else None,
        quick_gelu=quick_gelu,
        resize_mode=str(pp.get("resize_mode", "shortest")),
    )


__all__ = [
    "LoadedClip",
    "ResolvedWeights",
    "clip_weights_available",
    "default_preprocess",
    "load_clip",
    "preprocess_from_open_clip",
    "register_arch",
    "resolve_clip_weights",
]
