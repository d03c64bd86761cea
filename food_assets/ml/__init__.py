"""Plain PyTorch / Lightning code. Nothing under `food_assets.ml` imports Dagster."""
