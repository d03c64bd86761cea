"""Dagster resources: where artifacts go, the Lightning compute (the "GPU resource"), MLflow,
and the quality gates the asset checks read.

Switching from one laptop to a team (a GPU node, DDP, an MLflow server, object storage) changes
only this configuration, never the assets.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
from dagster_mlflow.resources import CONFIG_SCHEMA as MLFLOW_CONFIG_SCHEMA
from pydantic import Field

from food_assets import layout
from food_assets.defs.config_classes import DerivedResource, config_class
from food_assets.ml.training.config import ComputeConfig
from food_assets.storage import DEFAULT_DATA_DIR as DEFAULT_DATA_DIR  # re-exported
from food_assets.storage import ArtifactStorage, default_artifact_root, default_data_dir
from food_assets.tracking.model_registry import (
    mlflow_tracking_uri as mlflow_tracking_uri,  # re-exported
)


class ArtifactStore(dg.ConfigurableResource):
    """The artifact root: one folder per asset, `<root>/artifacts/<asset>/` (`food_assets.layout`).

    The root is the data folder by default, or any folder or fsspec URL (`s3://bucket/prefix`)
    in `artifact_root`. Assets and the ml layer always work on local files: `asset_dir` is the
    asset's folder in the local copy of the root, and the IO manager publishes it after the asset
    wrote it and fetches upstream folders before a consumer reads them (`food_assets.storage`).
    """

    data_dir: str = Field(
        default_factory=default_data_dir,
        description="Local root of what runs write: sources, caches, the local copy of a remote "
        "artifact root, and the artifacts themselves unless artifact_root says otherwise.",
    )
    artifact_root: str | None = Field(
        default_factory=default_artifact_root,
        description="Where asset folders live: a folder or an fsspec URL such as "
        "s3://bucket/prefix (default: FOOD_ASSETS_ARTIFACT_ROOT, else data_dir).",
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="fsspec options for a remote root (e.g. endpoint_url); credentials come "
        "from the environment (AWS_*), never from here.",
    )

    @property
    def storage(self) -> ArtifactStorage:
        return ArtifactStorage(
            self.artifact_root or self.data_dir,
            data_dir=self.data_dir,
            storage_options=self.storage_options,
        )

    @property
    def root(self) -> Path:
        """The local copy of the artifact root (the root itself when it is a folder)."""
        return self.storage.local

    def asset_dir(self, name: str) -> Path:
        """The asset's own folder in the local copy of the root, created."""
        path = self.storage.local_dir(name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def fetch(self, name: str, *, prefix: str | None = None, missing_ok: bool = False) -> Path:
        """An upstream asset's folder, made readable locally (a no-op for a local root)."""
        return self.storage.fetch(name, prefix=prefix, missing_ok=missing_ok)

    def location(self, path: str | os.PathLike[str]) -> str:
        """Where a local artifact file lives in the root (a URL for a remote root)."""
        return self.storage.location(path)

    def sources_dir(self) -> Path:
        return layout.sources_dir(Path(self.data_dir).expanduser().resolve())

    def cache_dir(self, name: str) -> Path:
        path = layout.cache_dir(Path(self.data_dir).expanduser().resolve(), name)
        path.mkdir(parents=True, exist_ok=True)
        return path


class LightningCompute(
    config_class(ComputeConfig, name="LightningComputeFields", base=DerivedResource)
):
    """The GPU resource: how Lightning trains (mirrors `lightning.Trainer` arguments).

    Its fields, defaults and descriptions are `food_assets.ml.training.ComputeConfig`'s
    (`food_assets/defs/config_classes.py`). The defaults pick a GPU when one is present and the CPU
    otherwise. A multi-GPU node sets `devices: "4", strategy: ddp`; a cluster adds `num_nodes`.
    """

    def compute_config(self) -> ComputeConfig:
        return self.to_ml()


class QualityGates(dg.ConfigurableResource):
    """Thresholds the asset checks enforce. Per-model accuracy floors live in `accuracy`:
    keys `<source>/<model>` or `<source>/*`, values minimum test top-1 accuracy (0-1)."""

    max_quarantine_share: float = Field(default=0.05, ge=0.0, le=1.0)
    accuracy: dict[str, float] = Field(default_factory=dict)
    onnx_atol: float = Field(default=1e-4, gt=0)
    # The int8 export's gate (ADR 0013): agreement with fp32 on the test split, accuracy drop.
    int8_min_agreement: float = Field(default=0.99, ge=0.0, le=1.0)
    int8_max_drop_points: float = Field(default=0.5, ge=0.0, le=100.0)
    int8_gate_fails_run: bool = Field(
        default=False, description="a failed int8 gate fails the run (else WARN: fp32 served)"
    )

    def accuracy_floor(self, source: str, model: str, default: float) -> float:
        for key in (f"{source}/{model}", f"{source}/*", f"*/{model}"):
            if key in self.accuracy:
                return float(self.accuracy[key])
        return default


def _mlflow_artifact_location(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        return layout.mlflow_artifacts_dir(Path(uri[len("sqlite:///") :]).parent).as_uri()
    return None


@dg.resource(
    config_schema={
        **MLFLOW_CONFIG_SCHEMA,
        "artifact_location": dg.Field(
            dg.Noneable(str),
            default_value=None,
            is_required=False,
            description="Artifact root for a new experiment (default: next to a SQLite store).",
        ),
        "ui_url": dg.Field(
            dg.Noneable(str),
            default_value=None,
            is_required=False,
            description="Base URL of the MLflow UI for the links in asset metadata when the "
            "tracking URI is not an http(s) server (default: FOOD_ASSETS_MLFLOW_UI_URL, else "
            "http://127.0.0.1:5000, where `mlflow ui` listens).",
        ),
        "system_metrics": dg.Field(
            bool,
            default_value=True,
            is_required=False,
            description="Log system metrics (CPU, memory, disk, network; GPU with nvidia-ml-py) "
            "into each model run while it trains (`system/*` metrics).",
        ),
        "system_metrics_interval_s": dg.Field(
            float,
            default_value=5.0,
            is_required=False,
            description="Seconds between two system-metric samples.",
        ),
    }
)
def food_mlflow(context: dg.InitResourceContext):
    """dagster-mlflow's `MlFlow` resource, after making sure the experiment exists once, and
    ending at teardown the parent run it opened or resumed (dagster-mlflow's own
    `end_mlflow_on_run_finished` hook does that for jobs; assets have no hooks).

    Two step processes opening a fresh SQLite store at the same moment would race in its schema
    migration, and a new experiment would put artifacts under the current directory; a file lock
    and an explicit artifact location avoid both.
    """
    import mlflow
    from dagster_mlflow.resources import MlFlow
    from filelock import FileLock

    from food_assets.tracking.model_registry import bound_http_waits
    from food_assets.tracking.redact import redact_logs, redact_uri

    bound_http_waits()  # a tracking server that went away fails a step in seconds (#29)
    redact_logs("mlflow")  # MLflow's warnings quote the server's URL, password included
    cfg = context.resource_config
    run = context.run  # None when an asset is invoked directly (tests, notebooks)
    _end_stale_runs(run.run_id if run else None)
    uri = cfg.get("mlflow_tracking_uri") or mlflow_tracking_uri()
    if redact_uri(uri) != uri:  # MLflow prints "View run at <URL>", password included
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    lock_dir = Path(uri[len("sqlite:///") :]).parent if uri.startswith("sqlite:///") else None
    lock = FileLock(str(lock_dir / ".init.lock")) if lock_dir else None
    if lock:
        lock_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=120)
    try:
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(uri)
        if client.get_experiment_by_name(cfg["experiment_name"]) is None:
            client.create_experiment(
                cfg["experiment_name"],
                artifact_location=cfg.get("artifact_location") or _mlflow_artifact_location(uri),
            )
    finally:
        if lock:
            lock.release()
    if run is not None:  # MLflow runs a dead process left RUNNING end now (ADR 0025)
        from food_assets.defs.recovery import end_orphan_mlflow_runs

        end_orphan_mlflow_runs(context.instance, uri)

    class _Context:  # MlFlow reads these attributes only
        log = context.log
        dagster_run = run or SimpleNamespace(job_name="direct_invocation")
        run_id = run.run_id if run else f"direct-{uuid.uuid4().hex[:12]}"
        resource_config = {**cfg, "mlflow_tracking_uri": uri}

    resource = MlFlow(_Context())
    resource.ui_url = cfg.get("ui_url")  # read by food_assets.tracking.runs for the metadata links
    # Read by food_assets.tracking.lineage when a model run starts.
    resource.system_metrics = cfg.get("system_metrics", True)
    resource.system_metrics_interval_s = cfg.get("system_metrics_interval_s", 5.0)
    parent = mlflow.active_run()
    try:
        yield resource
    finally:
        _end_parent_run(parent.info.run_id if parent else None)


def _end_parent_run(run_id: str | None) -> None:
    """End the parent run this resource opened, and any run a step left open above it.

    A run is never left active in the process: the next Dagster run (or a test against another
    store) must not log into it. With the multiprocess executor each step process resumes the
    parent (dagster-mlflow finds it by its `dagster_run_id` tag) and ends it here again."""
    import mlflow

    if run_id is None or mlflow.active_run() is None:
        return
    ids = set()
    while (active := mlflow.active_run()) is not None and run_id not in ids:
        ids.add(active.info.run_id)
        _end_active_run()


def _end_active_run(status: str = "FINISHED") -> None:
    """`mlflow.end_run()`, which leaves the run inactive in this process even when its store no
    longer knows it (MLflow pops its active-run stack before it tells the store)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.end_run(status=status)
    except MlflowException:
        pass  # the store (deleted, or another test's) no longer has the run: it is inactive now


def _end_stale_runs(dagster_run_id: str | None) -> None:
    """End MLflow runs left active in this process by code that did not end them (an earlier
    Dagster run that crashed, a notebook), before this Dagster run starts its own.

    Runs end against the store they belong to (the tracking URI is still the previous one
    here); one that store no longer knows just stops being active. Public API only."""
    import mlflow

    while (active := mlflow.active_run()) is not None:
        if dagster_run_id and active.data.tags.get("dagster_run_id") == dagster_run_id:
            return
        _end_active_run()
