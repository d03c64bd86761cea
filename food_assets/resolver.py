"""The one resolver of a model reference, and the one default-model rule (ADR 0020).

`food-assets predict`, `food-assets models`, the demo and whatever serves next call
`resolve_model`; nothing else turns a reference into a model. A reference is:

- None: the default, which is the champion's rule (ADR 0012): the model holding the MLflow
  registry's `champion` alias, which the leaderboard gives only to a model that passed its
  accuracy floor. Served from the local artifacts when they are that very version (its ONNX
  export and int8 twin answer), else from the registered bundle. When no champion exists (no
  MLflow store, no alias yet) the fallback is the most accurate materialized model
  (`catalog.best_model`), and `Resolved.how` says so: its floor was not checked.
- `champion` or a `models:/` URI: that registered version (`catalog.registry_model`).
- a materialized model's name: its artifacts under the artifact root.
- a path (a bundle folder, an `.onnx` file, an `onnx_<name>` folder): what the artifact itself
  records it is (`food_assets.ml.inference.kinds.artifact_kind`), never its file suffix.

No Dagster here; MLflow only inside `model_registry`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from food_assets import catalog, layout
from food_assets.catalog import MaterializedModel
from food_assets.ml.errors import FoodAssetsError, UnknownModelError
from food_assets.storage import ArtifactStorage
from food_assets.tracking import model_registry

#: The value-record field of `model_<name>` that holds the MLflow run it was logged in.
RUN_ID_FIELD = "mlflow_run_id"


@dataclass(frozen=True)
class Resolved:
    """A model to load, and how it was chosen (one line, said to the user).

    Attributes:
        model: the catalog entry (`catalog.load_predictor` loads it).
        how: why this model: `champion ...`, `fallback ...`, `named ...`, `path ...`.
        champion: whether it is the registry's champion (the default's rule held).
    """

    model: MaterializedModel
    how: str
    champion: bool = False


def entry_for_path(path: str | os.PathLike[str]) -> MaterializedModel:
    """A catalog entry for a model given as a path, by the kind the artifact records.

    Raises:
        CheckpointError: the path is no artifact of this project.
    """
    from food_assets.ml.inference.kinds import BUNDLE, artifact_kind

    path = Path(path).expanduser().resolve()
    if artifact_kind(path) == BUNDLE:
        return MaterializedModel(name=str(path), bundle_dir=path, onnx_path=None, metrics={})
    return MaterializedModel(name=str(path), bundle_dir=None, onnx_path=path, metrics={})


def resolve_model(
    ref: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
    *,
    storage: ArtifactStorage | None = None,
) -> Resolved:
    """The model `ref` names (see the module docstring), under the data folder `data`.

    Args:
        ref: None, `champion`, a `models:/` URI, a materialized name, or a path (a `PathLike`
            is always a path; a string is a path only when it is none of the others and exists).
        data: the data folder (default FOOD_ASSETS_DATA_DIR or ./data).
        storage: the artifact root already opened for `data` (default: opened here).

    Raises:
        UnknownModelError: nothing by that reference, or no model at all for the default.
        CheckpointError: a path that is no artifact of this project.
    """
    if isinstance(ref, os.PathLike):
        return Resolved(entry_for_path(ref), f"path {os.fspath(ref)}")
    if ref is not None and model_registry.is_registry_reference(ref):
        entry = catalog.registry_model(ref, data)
        return Resolved(entry, f"registry {entry.name}", champion=ref == model_registry.CHAMPION)
    storage = storage or catalog.open_storage(data)
    found = {m.name: m for m in catalog.list_materialized(storage)}
    if ref is None:
        return default_model(found, storage, data)
    if ref in found:
        return Resolved(found[ref], f"named {ref}")
    if Path(ref).expanduser().exists():
        return Resolved(entry_for_path(ref), f"path {ref}")
    from food_assets.ml.models.registry import get_model_spec

    try:
        get_model_spec(ref)
    except UnknownModelError as exc:  # not even a registry entry: the list of known ones
        raise UnknownModelError(f"{exc} (`food-assets models` lists them)") from None
    known = ", ".join(found) or "none yet"
    raise UnknownModelError(
        f"no materialized model {ref!r} under {_artifacts(storage)} (materialized: {known}); "
        f"run `food-assets train {ref}` or `food-assets export {ref}` first, or pass the path "
        "of a bundle folder or .onnx file"
    )


def default_model(
    found: dict[str, MaterializedModel],
    storage: ArtifactStorage,
    data: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
) -> Resolved:
    """The champion (floors respected); else, said out loud, the most accurate model.

    Args:
        found: the materialized models by name (`catalog.list_materialized`).
        download: False: a champion that must come from the registry is named, not downloaded
            (the entry has no files; `food-assets models` only says which model it is).
    """
    try:
        version = _champion_version(data)
    except FoodAssetsError as exc:
        why = str(exc)
    else:
        model = version.name.removeprefix(model_registry.REGISTERED_PREFIX)
        local = found.get(model)
        uri = f"models:/{version.name}@{model_registry.CHAMPION}"
        if local is not None and _logged_run(storage, model) == version.run_id:
            return Resolved(local, f"champion {uri} (version {version.version})", champion=True)
        if download:
            entry = catalog.registry_model(model_registry.CHAMPION, data)
        else:
            entry = MaterializedModel(name=uri, bundle_dir=None, onnx_path=None, metrics={})
        how = (
            f"champion {uri} (version {version.version}; the local model_{model} is another "
            "version, so its registered bundle answers)"
        )
        return Resolved(entry, how, champion=True)
    best = catalog.best_model(found.values())
    if best is None:
        raise UnknownModelError(
            f"no materialized model under {storage.url}; run `food-assets train custom_cnn` "
            "(or `food-assets export <model>`) first, or pass --from PATH"
        )
    how = (
        f"fallback: no champion ({why}); the most accurate materialized model, {best.name}, "
        "whose accuracy floor was not checked"
    )
    return Resolved(best, how)


def _champion_version(data: str | os.PathLike[str] | None) -> model_registry.RegistryVersion:
    """The champion's registered version; a `FoodAssetsError` saying why there is none. An
    unreachable or broken store counts as none (the fallback says so), never as a crash."""
    uri = model_registry.registry_uri(data)
    try:
        return model_registry.find_registered_version(model_registry.CHAMPION, uri=uri)
    except FoodAssetsError:
        raise
    except Exception as exc:  # a server down, a store MLflow cannot read
        raise UnknownModelError(f"the MLflow store is unreadable: {type(exc).__name__}") from exc


def _logged_run(storage: ArtifactStorage, model: str) -> str | None:
    """The MLflow run id the local `model_<model>` was logged in (its value record), if any."""
    try:
        record = storage.read_record(layout.model_asset(model)) or {}
    except FoodAssetsError:  # an unreadable record: not provably the champion's version
        return None
    value = record.get("value")
    fields = value.get("fields") if isinstance(value, dict) else None
    run_id = fields.get(RUN_ID_FIELD) if isinstance(fields, dict) else None
    return run_id if isinstance(run_id, str) else None


def _artifacts(storage: ArtifactStorage) -> str:
    return storage.location(layout.artifacts_dir(storage.local))
