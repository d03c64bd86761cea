"""`ClipConfig`, the one settings object of both CLIP assets, and the CLIP defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from food_assets.ml.errors import ConfigError

DEFAULT_ARCH = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"

#: Prompt templates ensembled by default; `{c}` is the cleaned class name.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of {c}, a type of food.",
    "a photo of {c}, a food dish.",
    "a close-up photo of {c}.",
    "this is a photo of {c}.",
)

#: How to provide CLIP weights offline (appended to every missing-weights error).
WEIGHT_HELP = (
    "CLIP weights cannot be downloaded on machines without network. Provide them with the config "
    "key `checkpoint`: the path to a local open_clip checkpoint (for ViT-B-32/openai, "
    "`open_clip_model.safetensors` from "
    "https://huggingface.co/timm/vit_base_patch32_clip_224.openai), or copy a Hugging Face "
    "cache that holds it and point HF_HOME or the key `cache_dir` at it."
)

# `visual.transformer.resblocks.-1.ln_1`: the last block's input norm of an open_clip ViT tower;
# `resolve_cam_layer` reads -1 as "the last block", whatever the depth.
CAM_LAYER = "visual.transformer.resblocks.-1.ln_1"


@dataclass(frozen=True)
class ClipConfig:
    """Everything a CLIP asset needs; defaults reproduce OpenAI ViT-B/32.

    Attributes:
        arch: open_clip architecture name (`open_clip.list_models()`), or the name given to
            `model_cfg`.
        weights: open_clip pretrained tag (`openai`, `laion2b_s34b_b79k`, ...), a path to a local
            open_clip checkpoint, or `none` (random init; needs `allow_random`).
        checkpoint: local file (or folder holding `open_clip_model.safetensors` /
            `open_clip_pytorch_model.bin`) with the weights of the `weights` tag; it wins over the
            Hugging Face cache. The tag still supplies preprocessing and QuickGELU.
        model_cfg: a custom open_clip model config dict (`embed_dim`, `vision_cfg`, `text_cfg`),
            registered under `arch`; used by tests with a tiny ViT.
        quick_gelu: force QuickGELU on/off; None takes it from the tag (OpenAI weights need it).
        allow_random: allow `weights="none"` (tests, benchmarks). Predictions are then meaningless.
        allow_download: let open_clip fetch a tag missing from the cache (needs the hub).
        cache_dir: Hugging Face cache folder to look in; None uses HF_HOME / the default.
        extra_templates: prompt templates added to `DEFAULT_TEMPLATES` (`{c}` = class name).
        class_name_overrides: raw class name -> prompt text (`{"pho": "pho noodle soup"}`).
        class_embeddings: path to a `class_embeddings.safetensors` written by an earlier run,
            reused instead of encoding the prompts (its class order and weights must match).
        template_eval_splits: splits on which each template is scored alone (zero-shot).
        batch_size, num_workers: image batches for feature extraction.
        k_shots: images per class for the few-shot probes (skipped where data is too short).
        c_grid: inverse L2 strengths tried on val for the logistic regression.
        max_iter: L-BFGS iterations for the logistic regression.
        seed: k-shot sampling and random init.
        device: `cpu`, `cuda`, `cuda:1`, or `auto`.
    """

    arch: str = DEFAULT_ARCH
    weights: str = DEFAULT_PRETRAINED
    checkpoint: str | None = None
    model_cfg: dict[str, Any] | None = None
    quick_gelu: bool | None = None
    allow_random: bool = False
    allow_download: bool = False
    cache_dir: str | None = None
    extra_templates: tuple[str, ...] = ()
    class_name_overrides: Mapping[str, str] = field(default_factory=dict)
    class_embeddings: str | None = None
    template_eval_splits: tuple[str, ...] = ("val",)
    batch_size: int = 64
    num_workers: int = 0
    k_shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    c_grid: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)
    max_iter: int = 1000
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1 (got {self.batch_size})")
        if any(int(k) < 1 for k in self.k_shots):
            raise ConfigError(f"k_shots must be positive integers (got {self.k_shots})")
        if not self.c_grid or any(not (float(c) > 0) for c in self.c_grid):
            raise ConfigError(
                f"c_grid must be a non-empty list of positive numbers ({self.c_grid})"
            )
        bad = [s for s in self.template_eval_splits if s not in ("train", "val", "test")]
        if bad:
            raise ConfigError(f"template_eval_splits: unknown split(s) {bad}; use train/val/test")
        self.templates()  # validate early: a typo in a template is a config error, not a crash

    def templates(self) -> tuple[str, ...]:
        """Default templates plus the extra ones, de-duplicated in order."""
        out: list[str] = []
        for t in (*DEFAULT_TEMPLATES, *self.extra_templates):
            if "{c}" not in t or t.count("{") != 1 or t.count("}") != 1:
                raise ConfigError(
                    f"prompt template {t!r} must contain the placeholder {{c}} exactly once "
                    "(and no other braces), e.g. 'a photo of {c}, a type of food.'"
                )
            if t not in out:
                out.append(t)
        return tuple(out)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return torch.device(self.device)
        except RuntimeError as exc:
            raise ConfigError(f"device {self.device!r} is not a torch device ({exc})") from exc
