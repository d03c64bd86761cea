"""Thin Dagster wiring: resolve config and resources, call `food_assets.ml`, attach metadata."""
