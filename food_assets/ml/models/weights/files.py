"""Local weight files: where they are looked for, reading them safely, loading them into a model.

Also the `weights_source` tag every builder puts on its model (`set_weights_source`,
`get_weights_source`), which the training metadata and the model card record.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from food_assets.ml.errors import CheckpointError, WeightsNotFoundError

WEIGHTS_DIR_ENV = "FOOD_ASSETS_WEIGHTS_DIR"
CACHE_DIR_ENV = "FOOD_ASSETS_CACHE_DIR"
LOCAL_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_SOURCE_ATTR = "weights_source"


# --------------------------------------------------------------------------- locations


def get_cache_dir() -> Path:
    """`$FOOD_ASSETS_CACHE_DIR`, else `~/.cache/food_assets` (converted weights live here)."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "food_assets"


def list_weights_dirs() -> list[Path]:
    """Folders searched for local ImageNet files, in order."""
    dirs = [
        Path(p).expanduser() for p in os.environ.get(WEIGHTS_DIR_ENV, "").split(os.pathsep) if p
    ]
    return dirs + [Path("data") / "weights", get_cache_dir() / "weights"]


def find_local_weights(names: Iterable[str]) -> Path | None:
    """First `<dir>/<name><suffix>` that exists, over `list_weights_dirs()`."""
    for folder in list_weights_dirs():
        for name in names:
            for suffix in LOCAL_SUFFIXES:
                candidate = folder / f"{name}{suffix}"
                if candidate.is_file():
                    return candidate.resolve()
    return None


def missing_imagenet_help(name: str, timm_name: str) -> str:
    """How to provide ImageNet weights offline for `name` (shown in errors and docs)."""
    first = list_weights_dirs()[0]
    return (
        f"put timm's ImageNet state dict for {timm_name!r} at {first / (name + '.safetensors')} "
        f"(or .pth; any folder in ${WEIGHTS_DIR_ENV} or ./data/weights works), or set the "
        f"model's `weights` config to the file's path, or train from scratch with "
        f"weights: none and mode: scratch"
    )


# --------------------------------------------------------------------------- tagging


def set_weights_source(model: nn.Module, source: str) -> nn.Module:
    """Record where the weights came from on the model (a plain attribute, survives pickling)."""
    object.__setattr__(model, _SOURCE_ATTR, source)
    return model


def get_weights_source(model: nn.Module) -> str:
    """What `set_weights_source` recorded, or "unknown" for a model not built by the registry."""
    return str(getattr(model, _SOURCE_ATTR, "unknown"))


def get_head_prefix(model: nn.Module) -> str | None:
    """State-dict prefix of the classifier head (`fc`, `classifier`), or None if unknown."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if head is None:
        return None
    for name, module in model.named_modules():
        if module is head:
            return name
    return None


# --------------------------------------------------------------------------- reading files


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    # Accept the usual containers: Lightning checkpoints and training scripts nest the weights.
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} holds no state dict (expected a mapping of tensors)")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path} holds no tensors: not a weights file")
    for prefix in ("model.", "module."):  # a LightningModule's `self.model`, a DDP wrapper
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a local state dict without executing code.

    Args:
        path: a `.safetensors` file, a `torch.save`d dict or Lightning checkpoint (read with
            `weights_only=True`), or a model bundle folder (its `model.safetensors`).

    Raises:
        WeightsNotFoundError: the path does not exist.
        CheckpointError: the file is corrupt or holds no state dict.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        bundle_weights = path / "model.safetensors"
        if not bundle_weights.is_file():
            raise WeightsNotFoundError(
                f"weights folder {path} is not a model bundle (no model.safetensors); point "
                "`weights` at a .safetensors/.pth file or at a bundle folder"
            )
        path = bundle_weights
    if not path.is_file():
        raise WeightsNotFoundError(
            f"weights file {path} does not exist: fix the `weights` path, or use "
            "weights: imagenet or weights: none"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # unpickling, zip, header and EOF errors come in many types
        raise CheckpointError(
            f"{path} is corrupt or not a weights file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); replace it with a good copy"
        ) from exc
    return _unwrap(obj, path)


def load_weights_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, origin: str) -> str:
    """Load `state` into `model`: strict on the backbone; a head of another shape is dropped.

    Returns:
        A note for the weights source: "" or "; head dropped (...)".

    Raises:
        CheckpointError: backbone keys missing, unexpected or of another shape.
    """
    own = model.state_dict()
    head = get_head_prefix(model)

    def is_head(key: str) -> bool:
        return head is not None and (key == head or key.startswith(head + "."))

    state = dict(state)
    dropped = [k for k in state if is_head(k) and k in own and state[k].shape != own[k].shape]
    note = ""
    if dropped:
        w = next((state[k] for k in dropped if k.endswith("weight")), state[dropped[0]])
        note = (
            f"; head dropped (the file has {w.shape[0]} classes, the model "
            f"{own[dropped[0]].shape[0]}): a fresh head was initialised"
        )
        for k in dropped:
            del state[k]
    bad_shape = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    missing = [k for k in own if k not in state and not (is_head(k) and dropped)]
    unexpected = [k for k in state if k not in own]
    if bad_shape or missing or unexpected:
        parts = []
        if bad_shape:
            parts.append(f"{len(bad_shape)} of another shape (e.g. {bad_shape[0]})")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise CheckpointError(
            f"{origin} does not fit {type(model).__name__}: backbone keys "
            + ", ".join(parts)
            + ". Was it saved from another architecture?"
        )
    model.load_state_dict(state, strict=not dropped)
    return note


def init_fresh_head(model: nn.Module) -> nn.Module:
    """Small-normal init of a new classifier head (weights std 0.01, bias 0).

    timm initialises EfficientNet heads uniformly in +-1/sqrt(num_classes), which suits 1000
    classes; on a 3-to-101-class head over 1280 pretrained features it gives logits in the tens
    and a first-epoch loss of 10+, wasting the warm-up. Near-zero logits start at loss ln(N).
    """
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
    return model


def apply_weights_path(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a local weights file into `model` and tag its source."""
    resolved = Path(path).expanduser().resolve()
    note = load_weights_into(model, load_state_dict_file(resolved), origin=str(resolved))
    if note:
        init_fresh_head(model)
    return set_weights_source(model, f"file {resolved}{note}")
