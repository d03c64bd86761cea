"""MLflow 3 lineage of a model: the datasets it trained and was tested on, the system metrics of
its training, and test metrics linked to the logged model (ADR 0023).

- `log_training_datasets`: the train and val manifests as MLflow datasets (`log_input`, contexts
  `training` / `validation`), each with its content digest and the splits file as its source.
- `system_metrics`: whether (and how often) the model run samples CPU, memory, disk, network
  and, with `nvidia-ml-py` installed, GPU utilisation (`system/*` metrics).
- `log_test_metrics`: the evaluation's test metrics logged with `model_id` and the test dataset,
  so that the logged model carries them and `mlflow.search_logged_models` can rank models.
- `leaderboard_from_mlflow`: that ranking, rebuilt from the store alone.

The digests are `food_assets.ml.data.lineage`'s: the same rows give the same digest in the data
versions Dagster shows, in CLIP's feature cache key and here. No Dagster in this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pandas as pd

from food_assets.ml.data.lineage import short, split_rows_digest
from food_assets.ml.data.splits import SplitManifest

#: MLflow's dataset context for each split (the names its UI shows).
SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}
#: The metric the leaderboard ranks by, as the evaluation logs it.
RANK_METRIC = "test/acc_top1"
#: Seconds between two samples of the system metrics; MLflow's own default is 10 s, which a
#: short sample run can finish inside (then no sample is logged at all).
DEFAULT_SYSTEM_METRICS_INTERVAL_S = 5.0
#: The logged model's tag naming the registry entry (every logged model is called "model").
MODEL_TAG = "food_assets.model"


def dataset_name(split: str) -> str:
    return f"food_splits/{split}"


def _source(location: str) -> Any:
    """The MLflow dataset source for the splits file (a local path or an object-store URL)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        # A local path matches MLflow's two local artifact sources, which are the same class.
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
        return resolve_dataset_source(location)


def split_dataset(splits: SplitManifest, split: str, location: str) -> Any:
    """One split of the manifest as an MLflow `PandasDataset`: its rows (schema and row count in
    the UI), `label_idx` as the targets, the splits file at `location` as the source, and the
    split's content digest (`food_assets.ml.data.lineage`) as the digest."""
    import mlflow

    frame = splits.frame(split)
    return mlflow.data.from_pandas(
        frame,
        source=_source(location),
        targets="label_idx",
        name=dataset_name(split),
        digest=short(split_rows_digest(frame, splits.class_names)),
    )


def log_training_datasets(splits: SplitManifest, location: str) -> dict[str, str]:
    """Log the train and val splits as inputs of the active run; returns {split: digest}."""
    import mlflow

    digests = {}
    for split in ("train", "val"):
        dataset = split_dataset(splits, split, location)
        mlflow.log_input(dataset, context=SPLIT_CONTEXTS[split])
        digests[split] = dataset.digest
    return digests


def system_metrics(mlflow_resource: Any) -> bool:
    """Whether the model run logs system metrics (the `mlflow` resource's `system_metrics`,
    default on), with the resource's sampling interval set for MLflow's monitor thread."""
    import mlflow

    enabled = getattr(mlflow_resource, "system_metrics", True)
    interval = getattr(mlflow_resource, "system_metrics_interval_s", None)
    if enabled:
        mlflow.set_system_metrics_sampling_interval(
            float(interval or DEFAULT_SYSTEM_METRICS_INTERVAL_S)
        )
        mlflow.set_system_metrics_samples_before_logging(1)
    return bool(enabled)


def logged_model_id(
    run_id: str, registered: tuple[str, int | str] | None = None, *, client: Any = None
) -> str | None:
    """The id of the model `run_id` logged: the registered version's model when given (the one
    the registry serves), else the run's latest logged model; None when it logged none."""
    import mlflow

    client = client or mlflow.MlflowClient()
    if registered is not None:
        model_id = getattr(client.get_model_version(*map(str, registered)), "model_id", None)
        if model_id:
            return model_id
    run = client.get_run(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        output_format="list",
    )
    return models[0].model_id if models else None


def log_test_metrics(
    metrics: Mapping[str, float],
    *,
    model: str,
    model_id: str | None,
    splits: SplitManifest,
    location: str,
) -> str | None:
    """Log the evaluation's test metrics into the active (model's) run, linked to its logged
    model and to the test split as a dataset (also logged as the run's `testing` input, and as
    the model's input). Without a logged model they are plain run metrics. Returns the test
    dataset's digest when it was logged."""
    import mlflow

    if model_id is None:
        mlflow.log_metrics(dict(metrics))
        return None
    from mlflow.entities import LoggedModelInput

    test = split_dataset(splits, "test", location)
    mlflow.log_input(test, context=SPLIT_CONTEXTS["test"], model=LoggedModelInput(model_id))
    mlflow.log_metrics(dict(metrics), model_id=model_id, dataset=test)
    mlflow.set_logged_model_tags(model_id, {MODEL_TAG: model})
    return test.digest


def leaderboard_from_mlflow(
    experiment_name: str = "food_assets",
    *,
    metric: str = RANK_METRIC,
    test_digest: str | None = None,
    tracking_uri: str | None = None,
) -> pd.DataFrame:
    """The leaderboard rebuilt from the MLflow store: every logged model with `metric` on the
    test dataset, best first (`mlflow.search_logged_models` ordered by it).

    Args:
        experiment_name: the experiment the models were logged in.
        metric: the metric to rank by (the evaluation's `test/acc_top1`).
        test_digest: only models tested on this test dataset (its digest); default: any.
        tracking_uri: the store (default: the current tracking URI); the process's own
            tracking URI is left as it is.

    Returns:
        One row per logged model: `model` (the registry entry), `model_id`, `run_id`, `metric`
        (its latest value), `test_dataset_digest`; columns in that order.
    """
    import mlflow

    columns = ["model", "model_id", "run_id", metric, "test_dataset_digest"]
    client = mlflow.MlflowClient(tracking_uri)  # None: the current tracking URI
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return pd.DataFrame(columns=columns)
    order: dict[str, Any] = {"field_name": f"metrics.{metric}", "ascending": False}
    datasets = None
    if test_digest:
        datasets = [{"dataset_name": dataset_name("test"), "dataset_digest": test_digest}]
        order.update(datasets[0])
    models, token = [], None
    while True:  # the client's search is `mlflow.search_logged_models`, one page at a time
        page = client.search_logged_models(
            experiment_ids=[experiment.experiment_id],
            datasets=datasets,
            order_by=[order],
            page_token=token,
        )
        models.extend(page)
        token = page.token
        if not token:
            break
    rows = []
    for m in models:
        values = [x for x in m.metrics or [] if x.key == metric]
        if test_digest:
            values = [x for x in values if x.dataset_digest == test_digest]
        if not values:
            continue
        latest = max(values, key=lambda x: (x.timestamp, x.step))
        rows.append(
            {
                "model": (m.tags or {}).get(MODEL_TAG, m.name),
                "model_id": m.model_id,
                "run_id": m.source_run_id,
                metric: float(latest.value),
                "test_dataset_digest": latest.dataset_digest,
            }
        )
    return pd.DataFrame(rows, columns=columns)


__all__ = [
    "leaderboard_from_mlflow",
    "log_test_metrics",
    "log_training_datasets",
    "logged_model_id",
    "split_dataset",
    "system_metrics",
]
