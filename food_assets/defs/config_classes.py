"""Dagster config classes derived from the `ml` settings dataclasses: one source of truth.

`TrainConfig`, `ClipConfig` and `ComputeConfig` (in `food_assets.ml`) define every setting: its
name, type, default and description (`setting(...)` in `ml/models/registry.py`). The Dagster
`Config` of each `model_<name>` asset and the `LightningCompute` resource are built from them
here with pydantic's `create_model`, so a field added, renamed or re-documented in `ml` is the
same in run config, the launchpad and `--help` without a second edit
(docs/adr/0008-one-config-source.md).

- Types: run config has no tuples or number unions, so `tuple[X, ...]` becomes `list[X]`
  (back to a tuple in `to_ml()`), `Mapping` a `dict`, and a field whose type has no run-config
  form names one in its metadata (`config_type`, e.g. `devices: str`); the dataclass
  normalises that form itself.
- Validation: the dataclass's own checks run when the Dagster config is built (a pydantic
  validator), so `lr: 0` is refused with the dataclass's message before a run starts (the CLI
  validates config up front this way too).
"""

# No `from __future__ import annotations`: pydantic and Dagster read the real type objects.

import collections.abc
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Optional, Union

import dagster as dg
from pydantic import Field, create_model, model_validator

from food_assets.ml.errors import FoodAssetsError
from food_assets.ml.models.registry import CONFIG_TYPE, DESCRIPTION

_SCALARS = (str, int, float, bool)


def config_field_type(tp: Any) -> Any:
    """The run-config type of a dataclass field type (see the module docstring).

    Raises:
        TypeError: the type has no run-config form; give the field a `config_type`.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            inner = config_field_type(options[0])
            return Optional[inner] if len(options) < len(args) else inner  # noqa: UP045
        raise TypeError(f"{tp} has no run-config form: give the field a config_type")
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return list[config_field_type(args[0])]
    if origin is list and len(args) == 1:
        return list[config_field_type(args[0])]
    if origin in (dict, collections.abc.Mapping) and len(args) == 2:
        return dict[args[0], config_field_type(args[1])]
    if origin is Literal or tp in _SCALARS or tp is Any:
        return tp
    raise TypeError(f"{tp} has no run-config form: give the field a config_type")


def _to_dataclass_value(tp: Any, value: Any) -> Any:
    """A run-config value back in the dataclass's form (lists that are tuples there)."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _to_dataclass_value(options[0], value) if len(options) == 1 else value
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def _as_config_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _pydantic_field(f: dataclasses.Field, default: Any, description: str) -> Any:
    if default is not dataclasses.MISSING:
        if isinstance(default, (list, dict, tuple)):
            frozen = _as_config_default(default)
            return Field(default_factory=lambda: type(frozen)(frozen), description=description)
        return Field(default=default, description=description)
    if f.default_factory is not dataclasses.MISSING:
        factory: Callable[[], Any] = f.default_factory
        return Field(default_factory=lambda: _as_config_default(factory()), description=description)
    return Field(description=description)


def dataclass_to_ml(config: Any) -> Any:
    """The `ml` dataclass instance a derived config stands for (validated by the dataclass)."""
    cls = type(config).__ml_class__
    hints = typing.get_type_hints(cls)
    values = {
        f.name: _to_dataclass_value(hints[f.name], getattr(config, f.name))
        for f in dataclasses.fields(cls)
    }
    return cls(**values)


def _validate(config: Any) -> Any:
    try:
        dataclass_to_ml(config)
    except FoodAssetsError as exc:  # the dataclass's message names the fix
        raise ValueError(str(exc)) from None
    return config


class DerivedConfig(dg.Config):
    """Base of the run configs derived from an `ml` dataclass (`config_class`)."""

    def to_ml(self) -> Any:
        """The `ml` settings object (`TrainConfig`, `ClipConfig`, ...)."""
        return dataclass_to_ml(self)

    @model_validator(mode="after")
    def _valid_for_ml(self) -> "DerivedConfig":
        return _validate(self)


class DerivedResource(dg.ConfigurableResource):
    """Base of the resources whose fields are derived from an `ml` dataclass."""

    def to_ml(self) -> Any:
        return dataclass_to_ml(self)

    @model_validator(mode="after")
    def _valid_for_ml(self) -> "DerivedResource":
        return _validate(self)


def config_class(
    dataclass: type,
    *,
    name: str,
    doc: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    base: type = DerivedConfig,
) -> type:
    """A Dagster config class with the fields, types, defaults and descriptions of `dataclass`.

    Args:
        dataclass: an `ml` settings dataclass whose fields all carry a description.
        name: the class name (shown in tracebacks; Dagster keys config by field, not name).
        doc: the class docstring (the config's description); default: the dataclass's.
        defaults: defaults that differ for this use (a registry entry's `config_defaults`).
        base: `DerivedConfig` (asset config) or `DerivedResource` (a resource).

    Raises:
        TypeError: a field without a description or without a run-config type; an unknown key
            in `defaults`.
    """
    defaults = dict(defaults or {})
    hints = typing.get_type_hints(dataclass)
    names = {f.name for f in dataclasses.fields(dataclass)}
    unknown = set(defaults) - names
    if unknown:
        raise TypeError(f"defaults for unknown {dataclass.__name__} fields: {sorted(unknown)}")
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(dataclass):
        description = f.metadata.get(DESCRIPTION)
        if not description:
            raise TypeError(
                f"{dataclass.__name__}.{f.name} has no description: declare it with "
                "setting(..., description=...)"
            )
        tp = f.metadata.get(CONFIG_TYPE) or config_field_type(hints[f.name])
        default = defaults.get(f.name, f.default)
        fields[f.name] = (tp, _pydantic_field(f, default, description))
    cls = create_model(name, __base__=base, __doc__=doc or dataclass.__doc__, **fields)
    cls.__ml_class__ = dataclass
    cls.__module__ = __name__
    return cls
