"""Where CLIP weights come from, decided offline-first and without touching the network.

`resolve_clip_weights` picks, in order: `checkpoint` (a local file) > `weights` given as a path
> the pretrained tag in the local Hugging Face cache > a download (only with `allow_download`).
Random init happens only with `allow_random=True`, never silently. The Dagster layer asks
`clip_weights_available(cfg)` before running.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from food_assets.ml.errors import ConfigError, WeightsNotFoundError
from food_assets.ml.models.clip.arch import register_arch
from food_assets.ml.models.clip.config import WEIGHT_HELP, ClipConfig

#: open_clip's file names inside a Hugging Face model repo (safetensors preferred).
_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


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


__all__ = ["ResolvedWeights", "clip_weights_available", "resolve_clip_weights"]
