"""Models in the MLflow Model Registry, for the CLI and the demo (ADR 0012).

Each `model_<name>` registers a version of `food_assets.<name>`; the leaderboard puts the
`champion` alias on the best one whose evaluation passed its accuracy floor.
`find_registered_version` resolves `champion` or a `models:/` URI to a version, `download_bundle`
fetches its bundle once into the local cache; the catalog (`catalog.registry_model`) turns that
into a `MaterializedModel`. This module never imports the catalog (no cycle, ADR 0020).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from food_assets import layout
from food_assets.storage import default_data_dir

#: Each `model_<name>` registers a version of `food_assets.<name>`; the leaderboard puts the
#: `champion` alias on the best one whose evaluation passed its accuracy floor.
REGISTERED_PREFIX = "food_assets."
CHAMPION = "champion"
#: Where the bundle is among the artifacts of the model's run (`tracking.ModelRun.log_fit`).
BUNDLE_ARTIFACT_PATH = "bundle"
#: `temperature_source` version tags: the card's as trained, or the evaluation's calibration.
TEMPERATURE_AS_TRAINED = "card (as trained)"
TEMPERATURE_FROM_EVALUATION = "evaluation (temperature scaling on val)"
#: Cache folder (`layout.cache_dir`) for bundles downloaded from registered versions.
REGISTRY_CACHE = "mlflow_models"

#: Bounds on MLflow's HTTP client when the tracking URI is a server (the team's `mlflow server`),
#: set unless the environment already says otherwise. MLflow's own defaults (7 retries, backoff
#: factor 2, 120 s per request) are made for rate-limited cloud services: a server that went
#: away holds every call for minutes, and a failing step makes several (the metrics, ending the
#: model's run, ending the parent run). Here: 2 retries 2-3 s apart (a restart of the server or
#: a dropped connection is survived), 30 s without an answer is a failure; about 3 s per call
#: against a server that is down, 90 s at most against one that hangs (docs/operations.md).
#: Every entry that talks to the store sets them: the `mlflow` resource, the reaper, `_client`.
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def bound_http_waits() -> None:
    """Set `HTTP_BOUNDS` in this process's environment where the user set nothing (MLflow reads
    them at each request)."""
    for key, value in HTTP_BOUNDS.items():
        os.environ.setdefault(key, value)


def registered_model_name(model: str) -> str:
    """The registered model of `model_<model>`: `food_assets.<model>`."""
    return f"{REGISTERED_PREFIX}{model}"


def is_registry_reference(ref: str | None) -> bool:
    """`champion` or a `models:/` URI (what `predict --model` and the demo accept)."""
    return bool(ref) and (ref == CHAMPION or str(ref).startswith("models:/"))


@dataclass(frozen=True)
class RegistryVersion:
    """A registered model version, as a consumer found it."""

    name: str  # food_assets.<model>
    version: str
    run_id: str
    alias: str | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def uri(self) -> str:
        """The `models:/` URI it was asked for by: the alias when there is one."""
        return f"models:/{self.name}@{self.alias}" if self.alias else self.version_uri

    @property
    def version_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def mlflow_tracking_uri(data_dir: str | None = None) -> str:
    """The embedded MLflow store under the data folder, unless MLFLOW_TRACKING_URI says else."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and data_dir is None:
        return env
    root = layout.mlflow_dir(Path(data_dir or default_data_dir()).expanduser().resolve())
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def registry_uri(data: str | os.PathLike[str] | None = None) -> str:
    """The MLflow store `predict` and the demo read the registry from: FOOD_ASSETS_MLFLOW_URI
    (the team's store, `configs/team/mlflow.yaml`) when set, else the store the CLI logs to,
    `<data dir>/mlflow/mlflow.db`."""
    env = os.environ.get("FOOD_ASSETS_MLFLOW_URI")
    if env:
        return env
    folder = Path(data or default_data_dir()).expanduser().resolve()
    return f"sqlite:///{layout.mlflow_dir(folder) / 'mlflow.db'}"


def _client(uri: str) -> Any:
    from food_assets.ml.errors import UnknownModelError

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise UnknownModelError(
            f"no MLflow store at {uri[len('sqlite:///') :]}: nothing is registered yet; "
            "materialize the models and the leaderboard first (`make run`), or set "
            "FOOD_ASSETS_MLFLOW_URI to the team's store"
        )
    import mlflow

    bound_http_waits()
    return mlflow.MlflowClient(uri)


def search_registered_models(client: Any) -> list[Any]:
    """Every `food_assets.*` registered model (with its aliases)."""
    found, token = [], None
    while True:
        page = client.search_registered_models(
            filter_string=f"name LIKE '{REGISTERED_PREFIX}%'", page_token=token
        )
        found.extend(page)
        token = page.token
        if not token:
            return found


def find_registered_version(ref: str, *, uri: str) -> RegistryVersion:
    """The version `ref` names: `champion` (the one `food_assets.*` model with that alias),
    `models:/<name>@<alias>` or `models:/<name>/<version>`."""
    from mlflow.exceptions import MlflowException

    from food_assets.ml.errors import ConfigError, UnknownModelError

    client = _client(uri)
    if ref == CHAMPION:
        holders = [m for m in search_registered_models(client) if CHAMPION in m.aliases]
        if not holders:
            raise UnknownModelError(
                f"no model holds the `{CHAMPION}` alias in {_safe(uri)}: materialize the "
                "leaderboard (it promotes the best model that passed its accuracy floor)"
            )
        if len(holders) > 1:
            names = ", ".join(f"models:/{m.name}@{CHAMPION}" for m in holders)
            raise UnknownModelError(f"several models hold `{CHAMPION}` ({names}); name one")
        ref = f"models:/{holders[0].name}@{CHAMPION}"
    body = ref[len("models:/") :]
    alias = None
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        elif "/" in body:
            name, number = body.rsplit("/", 1)
            mv = client.get_model_version(name, number)
        else:
            raise ConfigError(
                f"{ref!r}: use models:/<name>@<alias> or models:/<name>/<version> (e.g. "
                f"models:/{REGISTERED_PREFIX}custom_cnn@{CHAMPION}), or --model {CHAMPION}"
            )
    except MlflowException as exc:
        raise UnknownModelError(
            f"{ref}: not in the MLflow registry at {_safe(uri)} ({exc.message})"
        ) from None
    if not mv.run_id:
        raise UnknownModelError(f"{ref}: version {mv.version} has no source run with a bundle")
    return RegistryVersion(mv.name, str(mv.version), mv.run_id, alias, dict(mv.tags or {}))


def _safe(uri: str) -> str:
    """A tracking URI without its password, for messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.password:
        return uri.replace(f":{parts.password}@", ":***@")
    return uri


def download_bundle(found: RegistryVersion, uri: str, data: Path) -> Path:
    """The version's bundle in the local cache (downloaded on first use; versions are
    immutable, so a complete cached copy is reused)."""
    from food_assets.ml import artifacts
    from food_assets.ml.errors import CheckpointError

    target = layout.cache_dir(data, REGISTRY_CACHE) / found.name / found.version / "bundle"
    if not (target / "card.json").is_file():
        import mlflow

        path = found.tags.get("bundle_artifact_path", BUNDLE_ARTIFACT_PATH)
        target.parent.mkdir(parents=True, exist_ok=True)
        with artifacts.atomic_dir(target) as tmp:
            got = mlflow.artifacts.download_artifacts(
                run_id=found.run_id, artifact_path=path, dst_path=str(tmp), tracking_uri=uri
            )
            if Path(got) != tmp:
                for item in Path(got).iterdir():
                    item.rename(tmp / item.name)
                Path(got).rmdir()
    card = json.loads((target / "card.json").read_text(encoding="utf-8"))
    tagged = found.tags.get("label_map")
    if tagged is not None:
        labels = json.loads(tagged)
        if [labels[str(i)] for i in range(len(labels))] != list(card.get("class_names", [])):
            raise CheckpointError(
                f"{found.version_uri}: the label map in its tags disagrees with its bundle's "
                "card.json; register the model again (materialize model_<name>)"
            )
    return target
