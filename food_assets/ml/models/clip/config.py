"""`ClipConfig`, the settings of every CLIP model (all a zero-shot entry has), `ClipProbeConfig`
over it (the linear probe's own fields), and the CLIP defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from food_assets.ml.errors import ConfigError
from food_assets.ml.models.registry import setting

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
    """What every CLIP model needs, and all a zero-shot entry has; defaults reproduce OpenAI
    ViT-B/32. The linear probe's own fields are `ClipProbeConfig`'s, so `model_clip_zero_shot`'s
    run config shows none of them.

    The Dagster run config of a CLIP model is derived from its class (a field here is a
    run-config key with this default and description, docs/adr/0008-one-config-source.md); a
    registry entry may override defaults (`ModelSpec.config_defaults`, e.g. `arch: ViT-L-14`).
    """

    arch: str = setting(
        DEFAULT_ARCH,
        description="open_clip architecture (open_clip.list_models(): ViT-B-32, ViT-L-14, ...), "
        "or the name given to model_cfg",
    )
    weights: str = setting(
        DEFAULT_PRETRAINED,
        description="open_clip pretrained tag (openai, laion2b_s34b_b79k, ...), a path to a local "
        "open_clip checkpoint, or none (random init; needs allow_random)",
    )
    checkpoint: str | None = setting(
        None,
        description="local file (or folder holding open_clip_model.safetensors / "
        "open_clip_pytorch_model.bin) with the weights of the `weights` tag, for offline use; it "
        "wins over the Hugging Face cache. The tag still supplies preprocessing and QuickGELU",
    )
    on_missing_weights: Literal["error", "skip"] = setting(
        "skip",
        description="when no weights can be found on this machine: skip the model with the "
        "reason (skip) or fail (error)",
    )
    model_cfg: dict[str, Any] | None = setting(
        None,
        description="a custom open_clip model config (embed_dim, vision_cfg, text_cfg), "
        "registered under `arch` (tiny test models)",
    )
    quick_gelu: bool | None = setting(
        None, description="force QuickGELU on/off; null: from the tag (OpenAI weights need it)"
    )
    allow_random: bool = setting(
        False,
        description="allow weights: none (tests, benchmarks); predictions are then meaningless",
    )
    allow_download: bool = setting(
        False, description="let open_clip fetch a tag missing from the cache (needs the hub)"
    )
    cache_dir: str | None = setting(
        None, description="Hugging Face cache folder to look in; null: HF_HOME / the default"
    )
    extra_templates: tuple[str, ...] = setting(
        (), description="prompt templates added to the defaults ({c} is the class name)"
    )
    class_name_overrides: Mapping[str, str] = setting(
        default_factory=dict,
        description='raw class name -> prompt text ({"pho": "pho noodle soup"})',
    )
    class_embeddings: str | None = setting(
        None,
        description="path to a class_embeddings.safetensors written by an earlier run, reused "
        "instead of encoding the prompts (its class order and weights must match)",
    )
    template_eval_splits: tuple[str, ...] = setting(
        ("val",), description="zero-shot: splits on which each template is also scored alone"
    )
    batch_size: int = setting(64, description="images per batch for feature extraction")
    num_workers: int = setting(0, description="DataLoader worker processes")
    seed: int = setting(0, description="k-shot sampling and random init")
    device: str = setting("auto", description="cpu | cuda | cuda:1 | auto")

    def __post_init__(self) -> None:
        if self.on_missing_weights not in ("error", "skip"):
            raise ConfigError(
                f"on_missing_weights {self.on_missing_weights!r} is not one of error, skip"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1 (got {self.batch_size})")
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


@dataclass(frozen=True)
class ClipProbeConfig(ClipConfig):
    """The linear probe's settings: `ClipConfig` plus its own fields (k-shot, the L2 grid, the
    solver's iterations, the ensemble with the zero-shot head)."""

    k_shots: tuple[int, ...] = setting(
        (1, 2, 4, 8, 16),
        description="linear probe: images per class for the few-shot probes (skipped where "
        "the data is too short)",
    )
    c_grid: tuple[float, ...] = setting(
        (0.1, 1.0, 10.0, 100.0, 1000.0),
        description="linear probe: inverse L2 strengths tried on val",
    )
    max_iter: int = setting(1000, description="linear probe: L-BFGS iterations")
    zero_shot_ensemble: Literal["off", "report", "bundle"] = setting(
        "report",
        description="linear probe: mix its logits with the zero-shot head's, weight alpha "
        "picked on val (WiSE-FT, last layer): off | report (figures beside both) | bundle "
        "(also store the mixed head as the probe's)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(int(k) < 1 for k in self.k_shots):
            raise ConfigError(f"k_shots must be positive integers (got {self.k_shots})")
        if not self.c_grid or any(not (float(c) > 0) for c in self.c_grid):
            raise ConfigError(
                f"c_grid must be a non-empty list of positive numbers ({self.c_grid})"
            )
        if self.zero_shot_ensemble not in ("off", "report", "bundle"):
            raise ConfigError(
                f"zero_shot_ensemble {self.zero_shot_ensemble!r} is not one of off, report, bundle"
            )
