"""MLflow records of a model materialization: the Dagster side's tracking helper.

One nested MLflow run per `model_<name>` materialization under dagster-mlflow's run for the
Dagster run (ADR 0004): Lightning's per-epoch curves go in through `ModelRun.loggers()`; the
params, numeric metadata, artifacts (bundle, checkpoints, plots, label map, resolved config) and
the logged model with its signature through `ModelRun.log_fit`. `food_assets.ml` never imports
MLflow; the asset body calls this module and nothing else about tracking.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from food_assets.ml.models.bundle import FitResult
from food_assets.ml.models.registry import FitSkipped

#: The versions the logged model names, so that MLflow does not pip-freeze the environment.
PIP_REQUIREMENTS = ["torch==2.14.1", "torchvision==0.29.1", "timm", "open_clip_torch"]
#: Where the tracking UI runs (the link in the asset's metadata).
MLFLOW_UI = "http://localhost:5000"


@dataclass(frozen=True)
class ModelRun:
    """The MLflow run of one model materialization."""

    run: Any  # mlflow.ActiveRun

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def loggers(self) -> list[Any]:
        """Lightning loggers that write into this run (per-epoch metrics)."""
        import mlflow
        from lightning.pytorch.loggers import MLFlowLogger

        return [MLFlowLogger(tracking_uri=mlflow.get_tracking_uri(), run_id=self.run_id)]

    def log_fit(self, result: FitResult, params: dict[str, Any]) -> None:
        """Params, numeric metadata as metrics, artifacts and the logged model."""
        import mlflow

        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        for k, v in result.metadata.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                mlflow.log_metric(k, float(v))
        if result.metadata.get("weights_fallback"):
            mlflow.set_tag("weights_fallback", "scratch")
        mlflow.log_dict({i: c for i, c in enumerate(result.card.class_names)}, "label_map.json")
        mlflow.log_dict(params, "resolved_config.json")
        mlflow.log_artifacts(str(result.bundle_dir), artifact_path="bundle")
        best = result.metadata.get("best_checkpoint")
        if best and Path(best).is_file():
            mlflow.log_artifact(str(best), artifact_path="checkpoints")
        for path in result.plots.values():
            mlflow.log_artifact(str(path), artifact_path="plots")
        log_model_with_signature(result)

    def metadata(self) -> dict[str, Any]:
        """The run's id, a link to it and the tracking URI, for the asset's metadata."""
        import dagster as dg
        import mlflow

        info = self.run.info
        return {
            "mlflow_run_id": info.run_id,
            "mlflow_run": dg.MetadataValue.url(
                f"{MLFLOW_UI}/#/experiments/{info.experiment_id}/runs/{info.run_id}"
            ),
            "mlflow_tracking_uri": mlflow.get_tracking_uri(),
        }


@contextlib.contextmanager
def model_run(mlflow_resource: Any, run_name: str, tags: dict[str, str]) -> Iterator[ModelRun]:
    """A nested MLflow run for one model under the Dagster run's parent run.

    dagster-mlflow keeps one parent per Dagster run, so several models in one run stay apart.
    A fit that declines to run (`FitSkipped`) leaves no run behind: the nested run it was given
    is deleted, as if it had not been opened.
    """
    import mlflow

    del mlflow_resource  # its initialisation set the tracking URI and the parent run
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(mlflow.start_run(run_name=run_name, nested=True, tags=tags))
        try:
            yield ModelRun(run)
        except FitSkipped:
            stack.close()  # end it first: a run is deleted once it is no longer active
            mlflow.MlflowClient().delete_run(run.info.run_id)
            raise


def log_model_with_signature(result: FitResult) -> None:
    """The logged model: the network as MLflow's PyTorch flavour, with its input/output
    signature taken from a real forward pass."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    from food_assets.ml.models.bundle import load_bundle

    model, card = load_bundle(result.bundle_dir)
    size = card.preprocess.input_size
    x = torch.zeros(1, 3, size, size)
    with torch.inference_mode():
        y = model(x)
    # MLflow 3's default `pt2` format (torch.export) needs an example and loads without
    # unpickling; the requirements are given so that MLflow does not pip-freeze the venv.
    with warnings.catch_warnings():
        # MLflow notes that it cannot validate `Any` type hints it finds; the explicit
        # signature below is what validates inputs.
        warnings.filterwarnings("ignore", message=".*Any type hint is inferred.*")
        mlflow.pytorch.log_model(
            model,
            name="model",
            signature=infer_signature(x.numpy(), y.numpy()),
            input_example=x.numpy(),
            pip_requirements=PIP_REQUIREMENTS,
        )
