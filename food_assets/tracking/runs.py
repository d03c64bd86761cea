"""MLflow records of a model materialization: the Dagster side's tracking helper.

One nested MLflow run per `model_<name>` materialization under dagster-mlflow's run for the
Dagster run (ADR 0004), opened and ended by `model_run`: Lightning's own `MLFlowLogger` writes
the per-epoch curves into it (`ModelRun.loggers()`, nothing else logs per epoch); `ModelRun.log_fit`
adds the params, numeric metadata, artifacts (bundle, checkpoints, plots, label map, resolved
config), the logged model (a pyfunc that takes image bytes), and registers that model as a new
version of `food_assets.<name>` in the MLflow Model Registry. The leaderboard moves the
`champion` alias (`promote_champion` over `choose_champion`, a pure rule; ADR 0012). No Dagster
here: the asset bodies gather what Dagster knows (check records) and turn links into metadata.
`food_assets.ml` never imports MLflow; the asset bodies call this module and nothing else about
tracking.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from food_assets.ml.errors import FoodAssetsError
from food_assets.ml.models.bundle import FitResult
from food_assets.ml.models.registry import FitSkipped
from food_assets.tracking import lineage as tracking_lineage
from food_assets.tracking import model_registry
from food_assets.tracking.redact import redact_uri

#: The versions the logged model names, so that MLflow does not pip-freeze the environment.
PIP_REQUIREMENTS = ["torch==2.14.1", "torchvision==0.29.1", "timm", "open_clip_torch"]
#: Where the tracking UI runs when the tracking URI is a database or a folder (the links in the
#: assets' metadata); an http(s) tracking URI is its own UI. Override: the `mlflow` resource's
#: `ui_url`, else this environment variable.
UI_URL_ENV = "FOOD_ASSETS_MLFLOW_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
#: Keys `log_fit` adds to `FitResult.metadata`, so that the model's value (and from there the
#: evaluation's report) names the registered version the leaderboard may promote.
REGISTERED_MODEL_KEY = "mlflow_registered_model"
MODEL_VERSION_KEY = "mlflow_model_version"


class TrackingServerError(FoodAssetsError):
    """The MLflow tracking server did not answer (down, restarting, unreachable)."""


def server_unreachable(exc: BaseException) -> bool:
    """Whether `exc` is MLflow failing to reach its tracking server: an `MlflowException` raised
    over a connection error or a timeout of the HTTP client (not a refusal by the server)."""
    import requests
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    seen: BaseException | None = exc
    for _ in range(10):  # the cause chain; bounded
        seen = seen.__cause__ or seen.__context__ if seen else None
        if isinstance(seen, (requests.ConnectionError, requests.Timeout)):
            return True
    return False


@contextlib.contextmanager
def server_errors() -> Iterator[None]:
    """An MLflow tracking server that goes away fails the step with one line naming it (its URI
    without password) and what to do, as a `FoodAssetsError` (not retried: `user_errors`);
    anything else passes through. Files written so far (the checkpoints) stay."""
    try:
        yield
    except Exception as exc:
        if not server_unreachable(exc):
            raise
        import mlflow

        raise TrackingServerError(
            f"the MLflow tracking server {redact_uri(mlflow.get_tracking_uri())} did not answer "
            f"(down or unreachable; MLFLOW_HTTP_REQUEST_MAX_RETRIES="
            f"{os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES', '7')}): the step stopped and "
            "its checkpoints are kept; start the server again and materialize again to resume"
        ) from None


def ui_url(tracking_uri: str, configured: str | None = None) -> str:
    """The MLflow UI's base URL for a tracking URI.

    An http(s) tracking URI is the server that serves the UI too (credentials dropped); any
    other store (SQLite, a folder, PostgreSQL) has no UI of its own: `configured` (the resource's
    `ui_url`), else FOOD_ASSETS_MLFLOW_UI_URL, else http://127.0.0.1:5000 (`mlflow ui`).
    """
    parts = urlsplit(tracking_uri)
    if parts.scheme in ("http", "https"):
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return (configured or os.environ.get(UI_URL_ENV) or DEFAULT_UI_URL).rstrip("/")


def run_link(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def model_version_link(base: str, name: str, version: str | int) -> str:
    return f"{base}/#/models/{name}/versions/{version}"


@dataclass
class ModelRun:
    """The MLflow run of one model materialization (and, once `log_fit` ran, its version)."""

    run: Any  # mlflow.ActiveRun
    ui_base: str = DEFAULT_UI_URL
    version: Any = None  # mlflow.entities.model_registry.ModelVersion

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def loggers(self) -> list[Any]:
        """Lightning's own `MLFlowLogger` on this run: the per-epoch metrics (the only per-epoch
        logger). Lightning marks the run finished when the fit ends; `model_run` ends it for
        good (failed, if anything after the fit raises)."""
        import mlflow
        from lightning.pytorch.loggers import MLFlowLogger

        return [MLFlowLogger(tracking_uri=mlflow.get_tracking_uri(), run_id=self.run_id)]

    def log_fit(self, result: FitResult, params: dict[str, Any]) -> None:
        """Params, numeric metadata as metrics, artifacts, the logged model and its registered
        version (`register_version`; the version goes into `result.metadata` too)."""
        import mlflow

        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        for k, v in result.metadata.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                mlflow.log_metric(k, float(v))
        if result.metadata.get("weights_fallback"):
            mlflow.set_tag("weights_fallback", "scratch")
        mlflow.log_dict(label_map(result.card.class_names), "label_map.json")
        mlflow.log_dict(params, "resolved_config.json")
        mlflow.log_artifacts(
            str(result.bundle_dir), artifact_path=model_registry.BUNDLE_ARTIFACT_PATH
        )
        best = result.metadata.get("best_checkpoint")
        if best and Path(best).is_file():
            mlflow.log_artifact(str(best), artifact_path="checkpoints")
        for path in result.plots.values():
            mlflow.log_artifact(str(path), artifact_path="plots")
        info = log_model_with_signature(result)
        self.version = register_version(info, result, self.run)
        result.metadata[REGISTERED_MODEL_KEY] = self.version.name
        result.metadata[MODEL_VERSION_KEY] = int(self.version.version)

    def links(self) -> dict[str, str]:
        """The run's id, the tracking URI and links to the run (and the registered version),
        as plain strings: the Dagster side turns the links into URL metadata."""
        import mlflow

        info = self.run.info
        out = {
            "mlflow_run_id": info.run_id,
            "mlflow_run": run_link(self.ui_base, info.experiment_id, info.run_id),
            # Shown in the UI and stored in the event log: never with its password.
            "mlflow_tracking_uri": redact_uri(mlflow.get_tracking_uri()),
        }
        if self.version is not None:
            name, number = self.version.name, self.version.version
            out["mlflow_model_uri"] = f"models:/{name}/{number}"
            out["mlflow_model_version"] = model_version_link(self.ui_base, name, number)
        return out


@contextlib.contextmanager
def model_run(mlflow_resource: Any, run_name: str, tags: dict[str, str]) -> Iterator[ModelRun]:
    """A nested MLflow run for one model under the Dagster run's parent run, ended here.

    dagster-mlflow keeps one parent per Dagster run (the resource opens it and ends it at
    teardown), so several models in one run stay apart. The `with` ends the nested run: finished,
    or failed when the body raises. A fit that declines to run (`FitSkipped`) leaves no run
    behind: the nested run it was given is deleted, as if it had not been opened.
    """
    import mlflow

    base = ui_url(mlflow.get_tracking_uri(), getattr(mlflow_resource, "ui_url", None))
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(
            mlflow.start_run(
                run_name=run_name,
                nested=True,
                tags=tags,
                # CPU/GPU/memory while it trains (tracking_lineage, ADR 0023).
                log_system_metrics=tracking_lineage.system_metrics(mlflow_resource),
            )
        )
        try:
            yield ModelRun(run, ui_base=base)
        except FitSkipped:
            stack.close()  # end it first: a run is deleted once it is no longer active
            mlflow.MlflowClient().delete_run(run.info.run_id)
            raise


def label_map(class_names: Any) -> dict[int, str]:
    return {i: c for i, c in enumerate(class_names)}


def log_model_with_signature(result: FitResult) -> Any:
    """The logged model of a fit (`log_pyfunc_model` on its bundle); MLflow's `ModelInfo`."""
    return log_pyfunc_model(result.bundle_dir)


def log_pyfunc_model(bundle_dir: str | os.PathLike[str]) -> Any:
    """Log the model as a pyfunc that takes image bytes (`food_assets.tracking.pyfunc`): the
    bundle travels as its artifact, so `mlflow.pyfunc.load_model` and `mlflow models serve`
    answer labels for photos, not logits for pre-normalized tensors (ADR 0022). The
    requirements are given so that MLflow does not pip-freeze the venv."""
    from food_assets.tracking import pyfunc

    with warnings.catch_warnings():
        # MLflow notes type hints it cannot validate; the explicit signature validates inputs.
        warnings.filterwarnings("ignore", message=".*type hint.*")
        return pyfunc.log_model(str(bundle_dir), PIP_REQUIREMENTS)


def register_version(model_info: Any, result: FitResult, run: Any) -> Any:
    """A new version of `food_assets.<name>` for a fit's logged model (`register_logged_model`)."""
    return register_logged_model(model_info, result.card, run)


def register_logged_model(model_info: Any, card: Any, run: Any) -> Any:
    """A new version of `food_assets.<name>` for the logged model, with what a consumer needs
    beside the weights as version tags: the label map, the preprocessing, the temperature
    (the card's, 1.0 as trained, until the leaderboard records the evaluation's) and where the
    bundle is among the run's artifacts."""
    import mlflow

    tags = {
        "model": card.name,
        "label_map": json.dumps(label_map(card.class_names)),
        "preprocess": json.dumps(card.preprocess.to_dict()),
        "temperature": repr(float(card.temperature)),
        "temperature_source": model_registry.TEMPERATURE_AS_TRAINED,
        "bundle_artifact_path": model_registry.BUNDLE_ARTIFACT_PATH,
        **{k: v for k, v in run.data.tags.items() if k in ("dagster_run_id", "asset", "source")},
    }
    return mlflow.register_model(
        model_info.model_uri, model_registry.registered_model_name(card.name), tags=tags
    )


# -- the champion --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One evaluated model as the leaderboard sees it, and whether it may be the champion."""

    model: str
    acc: float | None
    floor: float | None
    check_passed: bool
    version: int | None
    reason: str = ""

    @property
    def eligible(self) -> bool:
        """Passed its accuracy floor (the blocking check, and acc >= floor) and has a version."""
        return (
            self.check_passed
            and self.acc is not None
            and self.floor is not None
            and self.acc >= self.floor
            and self.version is not None
        )


def choose_champion(candidates: list[Candidate]) -> Candidate | None:
    """The one rule (ADR 0012): among eligible candidates, the highest test top-1; equal
    accuracies go to the name that sorts first. None when no candidate is eligible."""
    eligible = [c for c in candidates if c.eligible]
    eligible.sort(key=lambda c: (-(c.acc or 0.0), c.model))
    return eligible[0] if eligible else None


def promote_champion(
    uri: str, candidates: list[Candidate], temperatures: Mapping[str, float]
) -> Candidate | None:
    """Point the `champion` alias at `choose_champion(candidates)` in the store at `uri`.

    Every candidate with a version gets its test accuracy, floor, check verdict and calibrated
    temperature (`temperatures[model]`) as version tags. The alias goes on
    `food_assets.<best>` and comes off every other `food_assets.*` model, so there is one
    champion; when no candidate is eligible there is none (a model under its floor never keeps
    or gets it). A candidate whose version lacks its bundle files among its run's artifacts
    (what `predict` and the demo download) is passed over. MLflow only: the leaderboard asset
    gathers the candidates from Dagster's check records and reports the outcome.

    MLflow has no transaction over several writes, so their order is what keeps a registry
    that a kill (SIGKILL, a lost node) leaves between any two of them one a consumer can trust
    (issue #29): the alias comes off the other models first, then the tags are written, then
    the alias goes on the champion, last. A kill leaves at worst no champion (the next
    leaderboard sets it), never the alias on a version tagged as failed, never two champions.
    """
    import mlflow

    client = mlflow.MlflowClient(uri)
    champion = choose_champion([_with_files(client, c) for c in candidates])
    keep = model_registry.registered_model_name(champion.model) if champion else None
    for registered in model_registry.search_registered_models(client):
        if model_registry.CHAMPION in registered.aliases and registered.name != keep:
            client.delete_registered_model_alias(registered.name, model_registry.CHAMPION)
    tag_candidates(client, candidates, temperatures)
    if champion is not None:
        client.set_registered_model_alias(keep, model_registry.CHAMPION, str(champion.version))
    return champion


def tag_candidates(
    client: Any, candidates: list[Candidate], temperatures: Mapping[str, float]
) -> None:
    """Each candidate's version gets its test top-1, floor, check verdict and temperature."""
    for c in candidates:
        if c.version is None:
            continue
        name = model_registry.registered_model_name(c.model)
        tags = {
            "test_acc_top1": f"{c.acc:.6f}",
            "accuracy_floor": "n/a" if c.floor is None else f"{c.floor:.6f}",
            "accuracy_check": "passed" if c.check_passed else "failed",
            "temperature": repr(float(temperatures[c.model])),
            "temperature_source": model_registry.TEMPERATURE_FROM_EVALUATION,
        }
        for k, v in tags.items():
            client.set_model_version_tag(name, str(c.version), k, v)


#: What a registered version's bundle must hold among its run's artifacts to be promoted.
BUNDLE_FILES = ("card.json", "model.safetensors")


def _with_files(client: Any, candidate: Candidate) -> Candidate:
    """`candidate`, or a copy without its version when that version's bundle files are not
    among its run's artifacts (deleted, or never uploaded): it cannot be the champion."""
    if not candidate.eligible:
        return candidate  # only a version that could win is looked up
    from mlflow.exceptions import MlflowException

    name = model_registry.registered_model_name(candidate.model)
    folder = model_registry.BUNDLE_ARTIFACT_PATH
    try:
        mv = client.get_model_version(name, str(candidate.version))
        folder = (mv.tags or {}).get("bundle_artifact_path", folder)
        found = {Path(a.path).name for a in client.list_artifacts(mv.run_id, folder)}
    except (MlflowException, OSError):
        found = set()
    if set(BUNDLE_FILES) <= found:
        return candidate
    reason = f"version {candidate.version} has no {folder}/ files ({', '.join(BUNDLE_FILES)})"
    return dataclasses.replace(candidate, version=None, reason=reason)
