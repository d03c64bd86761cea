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
from typing import Any

import dagster as dg
from dagster_mlflow.resources import CONFIG_SCHEMA as MLFLOW_CONFIG_SCHEMA
from pydantic import Field

#: Everything a run writes lives under this folder (git-ignored); FOOD_ASSETS_DATA_DIR moves it.
DEFAULT_DATA_DIR = "data"


def default_data_dir() -> str:
    return os.environ.get("FOOD_ASSETS_DATA_DIR", DEFAULT_DATA_DIR)


class ArtifactStore(dg.ConfigurableResource):
    """The artifact root: one folder per asset under `<data_dir>/artifacts/`."""

    data_dir: str = Field(
        default_factory=default_data_dir,
        description="Root of everything runs write (artifacts, generated sources, caches).",
    )

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    def asset_dir(self, name: str) -> Path:
        path = self.root / "artifacts" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def sources_dir(self) -> Path:
        return self.root / "sources"

    def cache_dir(self, name: str) -> Path:
        path = self.root / "cache" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


class LightningCompute(dg.ConfigurableResource):
    """The GPU resource: how Lightning trains (mirrors `lightning.Trainer` arguments).

    The defaults pick a GPU when one is present and the CPU otherwise. A multi-GPU node sets
    `devices: 4, strategy: ddp`; a cluster adds `num_nodes`.
    """

    accelerator: str = Field(default="auto", description="auto | cpu | gpu | cuda | mps")
    devices: str = Field(default="auto", description='"auto", a count like "2", or "0,1"')
    precision: str = Field(
        default="32-true", description="32-true | 16-mixed | bf16-mixed (mixed needs a GPU)"
    )
    strategy: str = Field(default="auto", description="auto | ddp | ddp_spawn | fsdp ...")
    num_nodes: int = Field(default=1, ge=1)
    deterministic: bool = Field(default=False, description="cuDNN/torch deterministic kernels")

    def compute_config(self) -> Any:
        from food_assets.ml.training import ComputeConfig

        devices: Any = self.devices
        if isinstance(devices, str) and devices.isdigit():
            devices = int(devices)
        return ComputeConfig(
            accelerator=self.accelerator,
            devices=devices,
            precision=self.precision,
            strategy=self.strategy,
            num_nodes=self.num_nodes,
            deterministic=self.deterministic,
        )


class QualityGates(dg.ConfigurableResource):
    """Thresholds the asset checks enforce. Per-model accuracy floors live in `accuracy`:
    keys `<source>/<model>` or `<source>/*`, values minimum test top-1 accuracy (0-1)."""

    max_quarantine_share: float = Field(default=0.05, ge=0.0, le=1.0)
    accuracy: dict[str, float] = Field(default_factory=dict)
    onnx_atol: float = Field(default=1e-4, gt=0)

    def accuracy_floor(self, source: str, model: str, default: float) -> float:
        for key in (f"{source}/{model}", f"{source}/*", f"*/{model}"):
            if key in self.accuracy:
                return float(self.accuracy[key])
        return default


def mlflow_tracking_uri(data_dir: str | None = None) -> str:
    """The embedded MLflow store under the data folder, unless MLFLOW_TRACKING_URI says else."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and data_dir is None:
        return env
    root = Path(data_dir or default_data_dir()).expanduser().resolve() / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _mlflow_artifact_location(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
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
    }
)
def food_mlflow(context: dg.InitResourceContext):
    """dagster-mlflow's `MlFlow` resource, after making sure the experiment exists once.

    Two step processes opening a fresh SQLite store at the same moment would race in its schema
    migration, and a new experiment would put artifacts under the current directory; a file lock
    and an explicit artifact location avoid both.
    """
    import mlflow
    from dagster_mlflow.resources import MlFlow
    from filelock import FileLock

    cfg = context.resource_config
    run = context.run  # None when an asset is invoked directly (tests, notebooks)
    _end_stale_runs(run.run_id if run else None)
    uri = cfg.get("mlflow_tracking_uri") or mlflow_tracking_uri()
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

    class _Context:  # MlFlow reads these attributes only
        log = context.log
        dagster_run = run or SimpleNamespace(job_name="direct_invocation")
        run_id = run.run_id if run else f"direct-{uuid.uuid4().hex[:12]}"
        resource_config = {**cfg, "mlflow_tracking_uri": uri}

    return MlFlow(_Context())


def _end_stale_runs(dagster_run_id: str | None) -> None:
    """End MLflow runs left active in this process by an earlier Dagster run.

    dagster-mlflow leaves its parent run active when no end hook ran (an in-process run that
    finished or failed); the next Dagster run must not log into it. Runs end against the store
    they belong to (the tracking URI is still the previous one here); one that store no longer
    knows is simply dropped from MLflow's active-run stack.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    while (active := mlflow.active_run()) is not None:
        if dagster_run_id and active.data.tags.get("dagster_run_id") == dagster_run_id:
            return
        try:
            mlflow.end_run()
        except MlflowException:
            from mlflow.tracking import fluent

            stack = fluent._active_run_stack.get()  # no public API drops a run it cannot end
            if stack:
                stack.pop()
            else:
                return


def default_resources(data_dir: str | None = None) -> dict[str, Any]:
    """The code location's resources; `data_dir` (default: FOOD_ASSETS_DATA_DIR or ./data)
    roots the artifacts and the embedded MLflow store."""
    # An explicit data_dir keeps everything, MLflow included, inside it (tests); otherwise
    # MLFLOW_TRACKING_URI, when set, points the tracking at a server.
    uri = mlflow_tracking_uri(data_dir)
    data_dir = data_dir or default_data_dir()
    return {
        "artifact_store": ArtifactStore(data_dir=data_dir),
        "compute": LightningCompute(),
        "quality": QualityGates(),
        "mlflow": food_mlflow.configured(
            {"experiment_name": "food_assets", "mlflow_tracking_uri": uri}
        ),
    }
