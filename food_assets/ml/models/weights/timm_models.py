"""timm models under the weights policy: `none`, `imagenet` (first source that has them), a path.

Where `imagenet` weights come from is data: the registry entry's `WeightSource` records
(`weights/sources.py`), tried in order. This builder knows no model by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from food_assets.ml.errors import CheckpointError, ConfigError, WeightsNotFoundError
from food_assets.ml.models.weights.files import (
    apply_weights_path,
    find_local_weights,
    init_fresh_head,
    missing_imagenet_help,
    set_weights_source,
)
from food_assets.ml.models.weights.packages import convert_package_weights, package_source_label
from food_assets.ml.models.weights.sources import DEFAULT_TIMM_SOURCES, WeightSource


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
    sources: Sequence[WeightSource] = DEFAULT_TIMM_SOURCES,
    **kwargs: Any,
) -> nn.Module:
    """Build timm `timm_name` with `num_classes` outputs under the weights policy.

    Args:
        timm_name: timm architecture name.
        name: registry name (also a local file name looked up for `imagenet`).
        num_classes: size of the (fresh, unless the file has the same size) classifier.
        weights: `imagenet`, `none` or a path.
        sources: where `imagenet` weights may come from, in order (the registry entry's
            `weight_sources`).
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

    model = _create_imagenet(timm_name, name, num_classes, sources, **kwargs)
    pretrained_classes = timm.models.get_pretrained_cfg(timm_name).num_classes
    if num_classes != pretrained_classes:
        init_fresh_head(model)  # timm dropped the ImageNet head; this one is new
    return model


def _create_imagenet(
    timm_name: str, name: str, num_classes: int, sources: Sequence[WeightSource], **kwargs: Any
) -> nn.Module:
    """The first source that has the weights; WeightsNotFoundError listing each miss."""
    misses: list[str] = []
    for source in sources:
        if source.kind == "local":
            local = find_local_weights(source.names or (name, timm_name))
            if local is None:
                misses.append("no local file")
                continue
            model = _create_from_file(timm_name, local, num_classes, **kwargs)
            return set_weights_source(model, f"imagenet (local file {local})")
        if source.kind == "file":
            path = Path(source.path).expanduser()
            if not path.is_file():
                misses.append(f"no file at {path}")
                continue
            model = _create_from_file(timm_name, path.resolve(), num_classes, **kwargs)
            return set_weights_source(model, f"imagenet (file {path.resolve()})")
        if source.kind == "package":
            try:
                model = _create_from_package(source, timm_name, num_classes, **kwargs)
            except WeightsNotFoundError as exc:
                misses.append(str(exc))
                continue
            return set_weights_source(model, package_source_label(source))
        try:
            return _create_from_hub(timm_name, num_classes, **kwargs)
        except WeightsNotFoundError as exc:
            misses.append(str(exc))
    raise WeightsNotFoundError(
        f"no ImageNet weights for {name!r}: {'; '.join(misses) or 'no weight source listed'}. "
        f"To fix: {missing_imagenet_help(name, timm_name)}."
    )


def _create_from_package(
    source: WeightSource, timm_name: str, num_classes: int, **kwargs: Any
) -> nn.Module:
    file = convert_package_weights(source, timm_name)
    try:
        return _create_from_file(timm_name, file, num_classes, **kwargs)
    except CheckpointError:
        # A damaged cache (disk trouble, a hand edit): convert again once.
        file.unlink(missing_ok=True)
        return _create_from_file(
            timm_name, convert_package_weights(source, timm_name), num_classes, **kwargs
        )


def _create_from_hub(timm_name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    import timm

    hub_id = timm.models.get_pretrained_cfg(timm_name).hf_hub_id
    try:
        model = timm.create_model(timm_name, pretrained=True, num_classes=num_classes, **kwargs)
    except Exception as exc:  # offline, DNS, HTTP and cache errors come in many types
        raise WeightsNotFoundError(
            f"timm's hub loader failed ({type(exc).__name__}; the hub {hub_id} is unreachable "
            "or HF_HUB_OFFLINE=1)"
        ) from exc
    return set_weights_source(model, f"imagenet (Hugging Face hub {hub_id} via timm)")
