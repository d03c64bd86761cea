"""Where CLIP weights come from, and loading the open_clip model with its preprocessing.

Weights are explicit and offline-first (`resolve_clip_weights`): an open_clip pretrained tag found
in the local Hugging Face cache, a local checkpoint file (`checkpoint`), or random init only when
`allow_random=True`. The Dagster layer asks `clip_weights_available(cfg)` before running.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from food_assets.ml.artifacts import write_json
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import CheckpointError, ConfigError, WeightsNotFoundError
from food_assets.ml.models.clip.config import (
    DEFAULT_ARCH,
    DEFAULT_PRETRAINED,
    WEIGHT_HELP,
    ClipConfig,
)

#: open_clip's file names inside a Hugging Face model repo (safetensors preferred).
_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------


def _canonical(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def register_arch(arch: str, model_cfg: Mapping[str, Any] | None) -> str:
    """Make `arch` known to open_clip; a `model_cfg` is registered with `add_model_config`.

    open_clip names a config after its JSON file, so the dict is written to
    `<tmp>/<hash>/<arch>.json` first. Re-registering the same dict is a no-op; a different dict
    under a taken name is refused (it would silently change what that name builds everywhere).
    """
    import open_clip

    if model_cfg is None:
        if arch not in open_clip.list_models():
            raise ConfigError(
                f"unknown open_clip architecture {arch!r}; pick one of open_clip.list_models() "
                "(e.g. ViT-B-32, ViT-B-16, ViT-L-14) or pass `model_cfg`"
            )
        return arch
    cfg = _canonical(dict(model_cfg))
    missing = {"embed_dim", "vision_cfg", "text_cfg"} - cfg.keys()
    if missing:
        raise ConfigError(f"model_cfg for {arch!r} lacks {sorted(missing)}")
    existing = open_clip.get_model_config(arch)
    if existing is not None:
        if _canonical(existing) == cfg:
            return arch
        raise ConfigError(
            f"open_clip already has a different architecture named {arch!r}; give `model_cfg` "
            "another `arch` name"
        )
    path = (
        Path(tempfile.gettempdir()) / "food_assets-open_clip" / _digest(cfg)[:16] / f"{arch}.json"
    )
    write_json(path, cfg)
    open_clip.add_model_config(path)
    return arch


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedWeights:
    """Where the CLIP weights come from, decided without touching the network.

    Attributes:
        kind: `file` (a checkpoint on disk) or `random`.
        checkpoint: the file; None for random init.
        tag: the open_clip pretrained tag, if any (drives preprocessing and QuickGELU).
        tag_cfg: open_clip's pretrained config for the tag ({} when none).
        source: human-readable, goes to `ModelCard.weights_source`.
    """

    kind: Literal["file", "random"]
    checkpoint: Path | None
    tag: str | None
    tag_cfg: dict[str, Any]
    source: str
    seed: int = 0

    def identity(self) -> str:
        """A content identity of the weights (feature-cache key): sha256 of the file."""
        if self.checkpoint is None:
            return f"random-init:seed{self.seed}"
        return "sha256:" + _file_sha256(self.checkpoint)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    # Hashing a 600 MB checkpoint takes about a second; memoise on (path, size, mtime).
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _checkpoint_file(path: str | os.PathLike[str], *, key: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        for name in _HF_FILES:
            if (p / name).is_file():
                return p / name
        raise WeightsNotFoundError(
            f"the folder {p} (config key `{key}`) holds none of {list(_HF_FILES)}. {WEIGHT_HELP}"
        )
    if not p.is_file():
        raise WeightsNotFoundError(
            f"the CLIP checkpoint {p} (config key `{key}`) does not exist. {WEIGHT_HELP}"
        )
    return p


def _looks_like_path(value: str) -> bool:
    return (
        os.sep in value
        or value.startswith((".", "~"))
        or Path(value).suffix in {".safetensors", ".bin", ".pt", ".pth"}
    )


def _hf_cached_file(tag_cfg: Mapping[str, Any], cache_dir: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hub = str(tag_cfg.get("hf_hub") or "")
    if not hub:
        return None
    # open_clip's convention: "org/repo/" means the default file names, "org/repo/file" one file.
    repo, filename = os.path.split(hub)
    repo = repo.rstrip("/")
    names: tuple[str, ...] = (filename,) if filename else _HF_FILES
    if filename.endswith((".bin", ".pth")):
        names = (filename[:-4] + ".safetensors", filename)
    for name in names:
        hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def _hf_cache_location() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _is_random(weights: str) -> bool:
    return weights.lower() in ("none", "random", "")


def _resolve_local(cfg: ClipConfig, arch: str, weights: str) -> ResolvedWeights | None:
    """Random init or a file named by the config; None when `weights` is a pretrained tag."""
    if _is_random(weights) and not cfg.checkpoint:
        if not cfg.allow_random:
            raise ConfigError(
                f"weights={cfg.weights!r} would build {arch} with random weights, whose "
                "predictions are meaningless. Set `weights` to a pretrained tag (e.g. openai) or "
                "`checkpoint` to a local file; `allow_random: true` is for tests only."
            )
        return ResolvedWeights(
            "random", None, None, {}, f"random init ({arch}, seed {cfg.seed})", cfg.seed
        )
    if _is_random(weights):
        ckpt = _checkpoint_file(cfg.checkpoint, key="checkpoint")  # type: ignore[arg-type]
        return ResolvedWeights("file", ckpt, None, {}, f"{arch} from {ckpt}")
    if _looks_like_path(weights) or Path(weights).exists():
        ckpt = _checkpoint_file(weights, key="weights")
        return ResolvedWeights("file", ckpt, None, {}, f"{arch} from {ckpt}")
    return None


def _download_or_fail(
    cfg: ClipConfig, arch: str, weights: str, tag_cfg: dict[str, Any]
) -> ResolvedWeights:
    """The tag is in no local place: download it when allowed, else say how to provide it."""
    import open_clip

    hub = str(tag_cfg.get("hf_hub") or "").rstrip("/")
    where = (
        f"https://huggingface.co/{hub}" if hub else str(tag_cfg.get("url") or "the open_clip docs")
    )
    if cfg.allow_download:
        try:
            path = open_clip.download_pretrained(tag_cfg, cache_dir=cfg.cache_dir)
        except Exception as exc:  # hub errors come in many types; all mean "not here"
            raise WeightsNotFoundError(
                f"downloading CLIP weights {arch}/{weights} from {where} failed ({exc}). "
                f"{WEIGHT_HELP}"
            ) from exc
        return ResolvedWeights("file", Path(path), weights, tag_cfg, f"{arch}/{weights} downloaded")
    raise WeightsNotFoundError(
        f"CLIP weights {arch}/{weights} are not on this machine: the Hugging Face cache "
        f"({cfg.cache_dir or _hf_cache_location()}) has no "
        f"{' or '.join(_HF_FILES)} from {where}, and downloads are off. Set the config key "
        f"`checkpoint` to a local copy of that file (get it from {where}), point `cache_dir` / "
        "HF_HOME at a cache that holds it, or set `allow_download: true` where the hub is "
        "reachable."
    )


def resolve_clip_weights(cfg: ClipConfig) -> ResolvedWeights:
    """Decide where the weights come from; raise a user-facing error if nowhere.

    Order: `checkpoint` (a local file) > `weights` given as a path > the tag in the local Hugging
    Face cache > a download (only with `allow_download`). Never a silent random init.

    Raises:
        WeightsNotFoundError: no local source holds the weights (the message names the fix).
        ConfigError: unknown tag, or `weights="none"` without `allow_random`.
    """
    import open_clip

    arch = register_arch(cfg.arch, cfg.model_cfg)
    weights = (cfg.weights or "").strip()
    local = _resolve_local(cfg, arch, weights)
    if local is not None:
        return local

    tag_cfg = open_clip.get_pretrained_cfg(arch, weights)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ConfigError(
            f"{weights!r} is not an open_clip pretrained tag for {arch}; known tags: "
            f"{', '.join(tags) or '(none: give `checkpoint` a local file)'}"
        )
    tag_cfg = dict(tag_cfg)
    if cfg.checkpoint:
        ckpt = _checkpoint_file(cfg.checkpoint, key="checkpoint")
        return ResolvedWeights("file", ckpt, weights, tag_cfg, f"{arch}/{weights} from {ckpt}")
    cached = _hf_cached_file(tag_cfg, cfg.cache_dir)
    if cached is not None:
        return ResolvedWeights(
            "file",
            cached,
            weights,
            tag_cfg,
            f"{arch}/{weights} from the Hugging Face cache ({cached})",
        )
    return _download_or_fail(cfg, arch, weights, tag_cfg)


def clip_weights_available(cfg: ClipConfig) -> tuple[bool, str]:
    """Cheap pre-flight for the Dagster layer: can this config load weights here? (ok, reason)."""
    from food_assets.ml.errors import FoodAssetsError

    try:
        w = resolve_clip_weights(cfg)
    except FoodAssetsError as exc:
        return False, str(exc)
    return True, f"CLIP weights: {w.source}"


# --------------------------------------------------------------------------------------------
# Preprocessing and the model
# --------------------------------------------------------------------------------------------


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
        return f"{self.arch}@{_digest(self.model_cfg)[:12]}"

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
        model_cfg=_canonical(dict(cfg.model_cfg)) if cfg.model_cfg is not None else None,
        quick_gelu=quick_gelu,
        resize_mode=str(pp.get("resize_mode", "shortest")),
    )
