"""Making an open_clip architecture known by name, including one given as a config dict.

A tiny test tower or a custom model is a `model_cfg` dict; open_clip only knows architectures
from JSON files, so `register_arch` writes one. Both the weights resolution (`weights.py`) and
the model build (`loading.py`) start here.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from food_assets.ml.artifacts import write_json
from food_assets.ml.errors import ConfigError


def canonical(obj: Any) -> Any:
    """`obj` as JSON would give it back (sorted keys, tuples as lists): comparable configs."""
    return json.loads(json.dumps(obj, sort_keys=True))


def digest(obj: Any) -> str:
    """sha256 hex of `obj` as sorted JSON: a stable name for a config dict."""
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
    cfg = canonical(dict(model_cfg))
    missing = {"embed_dim", "vision_cfg", "text_cfg"} - cfg.keys()
    if missing:
        raise ConfigError(f"model_cfg for {arch!r} lacks {sorted(missing)}")
    existing = open_clip.get_model_config(arch)
    if existing is not None:
        if canonical(existing) == cfg:
            return arch
        raise ConfigError(
            f"open_clip already has a different architecture named {arch!r}; give `model_cfg` "
            "another `arch` name"
        )
    path = Path(tempfile.gettempdir()) / "food_assets-open_clip" / digest(cfg)[:16] / f"{arch}.json"
    write_json(path, cfg)
    open_clip.add_model_config(path)
    return arch


__all__ = ["canonical", "digest", "register_arch"]
