"""The one place that assembles the code location: assets, checks, resources, jobs, schedules,
the automation sensor. `dg` finds it through `[tool.dg.project]` in pyproject.toml."""

from __future__ import annotations

import importlib

import dagster as dg

from food_assets.resources import default_resources

# Each module defines its assets (factories over the model registry) and their checks.
ASSET_MODULES = [
    "food_assets.assets.data",
    "food_assets.assets.models",
    "food_assets.assets.evaluation",
    "food_assets.assets.explain",
    "food_assets.assets.export",
    "food_assets.assets.batch",  # batch_predictions: the champion scores each drop of photos
]


def _modules() -> list:
    mods = []
    for name in ASSET_MODULES:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return mods


#: The assets made once per registry entry: (module, its module-level list, factory(name)).
#: `build_definitions(models=...)` calls the factories instead of taking the lists.
PER_MODEL_FACTORIES = [
    ("food_assets.assets.models", "MODEL_ASSETS", "build_model_asset"),
    ("food_assets.assets.evaluation", "EVALUATION_ASSETS", "build_evaluation_asset"),
    ("food_assets.assets.explain", "EXPLAIN_ASSETS", "build_explain_asset"),
    ("food_assets.assets.export", "EXPORT_DEFS", "build_export_asset"),
]


def _keys(defs: list) -> set:
    keys: set = set()
    for d in defs:
        keys |= set(d.check_keys) if isinstance(d, dg.AssetChecksDefinition) else set(d.keys)
    return keys


def _per_model(models: list[str]) -> tuple[list, list, set]:
    """The per-model definitions for `models`, and the keys of the import-time ones."""
    assets: list = []
    checks: list = []
    replaced: set = set()
    for module_name, list_name, factory_name in PER_MODEL_FACTORIES:
        module = importlib.import_module(module_name)
        replaced |= _keys(list(getattr(module, list_name)))
        factory = getattr(module, factory_name)
        for name in models:
            made = factory(name)
            for d in made if isinstance(made, list) else [made]:
                (checks if isinstance(d, dg.AssetChecksDefinition) else assets).append(d)
    return assets, checks, replaced


def build_definitions(
    resources: dict | None = None, *, models: list[str] | None = None
) -> dg.Definitions:
    """The code location's definitions.

    Args:
        resources: default `default_resources()`.
        models: registry names to make `model_`/`evaluation_`/`gradcam_`/`onnx_` assets for;
            default: the entries registered when the asset modules were imported. A test that
            registers a model of its own passes `list_models()` after registering it.
    """
    from food_assets import schedules

    modules = _modules()
    assets = dg.load_assets_from_modules(modules)
    checks = dg.load_asset_checks_from_modules(modules)
    if models is not None:
        extra_assets, extra_checks, replaced = _per_model(models)
        assets = [a for a in assets if not _keys([a]) & replaced] + extra_assets
        checks = [c for c in checks if not _keys([c]) & replaced] + extra_checks
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        resources=resources or default_resources(),
        jobs=schedules.jobs(),
        schedules=schedules.schedules(),
        sensors=schedules.sensors(),
    )


defs = build_definitions()
