"""The one place that assembles the code location (the composition root): assets, checks, the
resource dict, jobs, schedules, the automation sensor. `dg` finds it through
`[tool.dg.project]` in pyproject.toml."""

from __future__ import annotations

import importlib
from typing import Any

import dagster as dg

from food_assets.defs.io_manager import AssetValueIOManager
from food_assets.defs.resources import (
    ArtifactStore,
    LightningCompute,
    QualityGates,
    food_mlflow,
    mlflow_tracking_uri,
)
from food_assets.storage import default_data_dir


def default_resources(data_dir: str | None = None) -> dict[str, Any]:
    """The code location's resources; `data_dir` (default: FOOD_ASSETS_DATA_DIR or ./data)
    roots the artifacts and the embedded MLflow store. The artifact root is the data folder
    unless FOOD_ASSETS_ARTIFACT_ROOT names another folder or an object-store URL.

    Here, not in `resources`, because the dict names the IO manager, which depends on the
    `ArtifactStore` resource: the composition root imports both, neither imports the other.
    """
    # An explicit data_dir keeps everything, MLflow included, inside it (tests); otherwise
    # MLFLOW_TRACKING_URI, when set, points the tracking at a server.
    uri = mlflow_tracking_uri(data_dir)
    data_dir = data_dir or default_data_dir()
    # Configured at launch, so that run config (`resources: {artifact_store: {config: ...}}`)
    # reaches the IO manager too: Dagster resolves its dependency to this same top-level key.
    store = ArtifactStore.configure_at_launch(data_dir=data_dir)
    return {
        "artifact_store": store,
        # Every asset value as a JSON record in its own folder (ADR 0009), not a pickle in
        # Dagster's storage folder.
        "io_manager": AssetValueIOManager(artifact_store=store),
        "compute": LightningCompute(),
        "quality": QualityGates(),
        "mlflow": food_mlflow.configured(
            {"experiment_name": "food_assets", "mlflow_tracking_uri": uri}
        ),
    }


# Each module defines its assets (factories over the model registry) and their checks.
ASSET_MODULES = [
    "food_assets.defs.assets.data",
    "food_assets.defs.assets.models",
    "food_assets.defs.assets.evaluation",
    "food_assets.defs.assets.leaderboard",
    "food_assets.defs.assets.explain",
    "food_assets.defs.assets.export",
    "food_assets.defs.assets.batch",  # batch_predictions: the champion scores each drop of photos
]


def _modules() -> list:
    return [importlib.import_module(name) for name in ASSET_MODULES]


#: The assets made once per registry entry: (module, its module-level list, factory(name)).
#: `build_definitions(models=...)` calls the factories instead of taking the lists.
PER_MODEL_FACTORIES = [
    ("food_assets.defs.assets.models", "MODEL_ASSETS", "build_model_asset"),
    ("food_assets.defs.assets.evaluation", "EVALUATION_ASSETS", "build_evaluation_asset"),
    ("food_assets.defs.assets.explain", "EXPLAIN_ASSETS", "build_explain_asset"),
    ("food_assets.defs.assets.export", "EXPORT_DEFS", "build_export_asset"),
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
    from food_assets.defs import schedules
    from food_assets.defs.assets import batch

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
        # batch_predictions' job and the sensor that notices a new drop of photos live beside
        # its asset (the schedules module sits beside the assets, not above them).
        jobs=[*schedules.jobs(), batch.batch_predictions_job],
        schedules=schedules.schedules(),
        sensors=[batch.new_drops, *schedules.sensors()],
    )


defs = build_definitions()
