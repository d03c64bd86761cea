"""The one place that assembles the code location: assets, checks, resources, jobs, schedules."""

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


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    from food_assets import schedules

    modules = _modules()
    return dg.Definitions(
        assets=dg.load_assets_from_modules(modules),
        asset_checks=dg.load_asset_checks_from_modules(modules),
        resources=resources or default_resources(),
        jobs=schedules.jobs(),
        schedules=schedules.schedules(),
    )


defs = build_definitions()
