"""Every path under the artifact root, in one place: pure functions, no I/O, no `mkdir`.

`root` is the artifact root: a local folder (`pathlib.Path`, the default is the data folder) or
a remote one (`upath.UPath("s3://bucket/prefix")`); both join with `/`, so every function works
on either. The same function gives the remote location and, called on the local cache, the local
copy (`food_assets.storage` keeps them in step). Nothing else in food_assets builds
`artifacts/<asset>/...` by hand: assets, the IO manager, the catalog, the CLI and the demo ask
here.

    <root>/artifacts/<asset>/value.json        the IO manager's record of the asset's value
    <root>/artifacts/<asset>/value.parquet     a DataFrame value (leaderboard's table)
    <root>/artifacts/food_images_raw/manifest.parquet, quarantine.parquet
    <root>/artifacts/food_splits/splits.parquet, class_map.json
    <root>/artifacts/model_<name>/bundle/      model.safetensors + card.json
    <root>/artifacts/evaluation_<name>/metrics.json, calibration.json, predictions.parquet, ...
    <root>/artifacts/onnx_<name>/model.onnx, model_int8.onnx, parity.json, latency.json, int8.json
    <root>/artifacts/gradcam_<name>/report/
    <root>/artifacts/leaderboard/comparison.md, comparison.csv, skipped.json

Outside the artifact root, under the data folder (local to each machine):

    <data>/sources/<source>/                   generated or downloaded source images
    <data>/cache/<name>/                       recomputable caches (CLIP features)
    <data>/mlflow/mlflow.db, <data>/mlflow/artifacts/   the embedded MLflow store
    <data>/artifact_cache/<scheme>/<bucket>/<prefix>/   the local copy of a remote root
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

# The export folder's file names belong to the exporter; the paths below reuse them (and
# `layout.ONNX_FILE` / `layout.ONNX_INT8_FILE` stay importable from here).
from food_assets.ml.export.files import (
    INT8_RECORD_FILE,
    LATENCY_FILE,
    ONNX_FILE,
)
from food_assets.ml.export.files import ONNX_INT8_FILE as ONNX_INT8_FILE  # re-exported

#: A local `Path` or a `UPath`: anything that joins with `/`.
P = TypeVar("P")

ARTIFACTS = "artifacts"
RECORD_FILE = "value.json"
FRAME_FILE = "value.parquet"
BUNDLE_DIR = "bundle"

RAW_ASSET = "food_images_raw"
SPLITS_ASSET = "food_splits"
#: Not `model_...`: `--select 'key:model_*'` then selects exactly the registry's models.
LEADERBOARD_ASSET = "leaderboard"

#: The per-model asset families, `<kind>_<model name>`.
MODEL_KINDS = ("model", "evaluation", "onnx", "gradcam")
#: The blocking check on `evaluation_<name>` the champion rule reads (the wiring defines it, the
#: MLflow side looks its result up by this name).
ACCURACY_CHECK = "accuracy_above_floor"


# -- asset names -------------------------------------------------------------------------------


def model_asset(name: str) -> str:
    return f"model_{name}"


def evaluation_asset(name: str) -> str:
    return f"evaluation_{name}"


def onnx_asset(name: str) -> str:
    return f"onnx_{name}"


def gradcam_asset(name: str) -> str:
    return f"gradcam_{name}"


def model_name_of(asset: str) -> str | None:
    """`custom_cnn` for `model_custom_cnn` or `onnx_custom_cnn` (any per-model kind); None for
    the other assets (`leaderboard` included: it is not a model)."""
    kind, sep, name = asset.partition("_")
    return name if sep and kind in MODEL_KINDS and name else None


# -- folders and files under the artifact root ---------------------------------------------------


def artifacts_dir(root: P) -> P:
    return root / ARTIFACTS  # type: ignore[operator]


def asset_dir(root: P, asset: str) -> P:
    """The one folder an asset writes into (and the only one)."""
    if not asset or asset.startswith(".") or "/" in asset or "\\" in asset:
        raise ValueError(f"not an asset folder name: {asset!r}")
    return root / ARTIFACTS / asset  # type: ignore[operator]


def record_file(root: P, asset: str) -> P:
    return asset_dir(root, asset) / RECORD_FILE  # type: ignore[operator]


def frame_file(root: P, asset: str) -> P:
    return asset_dir(root, asset) / FRAME_FILE  # type: ignore[operator]


def raw_manifest_file(root: P) -> P:
    return asset_dir(root, RAW_ASSET) / "manifest.parquet"  # type: ignore[operator]


def raw_quarantine_file(root: P) -> P:
    return asset_dir(root, RAW_ASSET) / "quarantine.parquet"  # type: ignore[operator]


def splits_file(root: P) -> P:
    return asset_dir(root, SPLITS_ASSET) / "splits.parquet"  # type: ignore[operator]


def class_map_file(root: P) -> P:
    return asset_dir(root, SPLITS_ASSET) / "class_map.json"  # type: ignore[operator]


def model_dir(root: P, name: str) -> P:
    return asset_dir(root, model_asset(name))


def bundle_dir(root: P, name: str) -> P:
    """The trained-model bundle (`model.safetensors`, `card.json`) of `model_<name>`."""
    return model_dir(root, name) / BUNDLE_DIR  # type: ignore[operator]


def card_file(root: P, name: str) -> P:
    return bundle_dir(root, name) / "card.json"  # type: ignore[operator]


def evaluation_dir(root: P, name: str) -> P:
    return asset_dir(root, evaluation_asset(name))


def metrics_file(root: P, name: str) -> P:
    """Test metrics of `evaluation_<name>` (`test/acc_top1`, ...)."""
    return evaluation_dir(root, name) / "metrics.json"  # type: ignore[operator]


def calibration_file(root: P, name: str) -> P:
    """The temperature `evaluation_<name>` fitted on val; the one place consumers read it."""
    return evaluation_dir(root, name) / "calibration.json"  # type: ignore[operator]


def onnx_dir(root: P, name: str) -> P:
    return asset_dir(root, onnx_asset(name))


def onnx_file(root: P, name: str) -> P:
    return onnx_dir(root, name) / ONNX_FILE  # type: ignore[operator]


def int8_record_file(root: P, name: str) -> P:
    """The int8 export's record (quantization, gate, latency) as JSON, beside the file."""
    return onnx_dir(root, name) / INT8_RECORD_FILE  # type: ignore[operator]


def latency_file(root: P, name: str) -> P:
    return onnx_dir(root, name) / LATENCY_FILE  # type: ignore[operator]


def gradcam_dir(root: P, name: str) -> P:
    return asset_dir(root, gradcam_asset(name))


def gradcam_report_dir(root: P, name: str) -> P:
    return gradcam_dir(root, name) / "report"  # type: ignore[operator]


def leaderboard_dir(root: P) -> P:
    return asset_dir(root, LEADERBOARD_ASSET)


def skipped_file(root: P) -> P:
    return leaderboard_dir(root) / "skipped.json"  # type: ignore[operator]


# -- under the (local) data folder ---------------------------------------------------------------


def sources_dir(data_dir: Path) -> Path:
    return data_dir / "sources"


def cache_dir(data_dir: Path, name: str) -> Path:
    return data_dir / "cache" / name


def mlflow_dir(data_dir: Path) -> Path:
    """The embedded MLflow store (`mlflow.db`) when no tracking server is configured."""
    return data_dir / "mlflow"


def mlflow_artifacts_dir(store_dir: Path) -> Path:
    """Where a new MLflow experiment next to a SQLite store keeps its artifacts."""
    return store_dir / "artifacts"


def remote_cache_root(data_dir: Path, url: str) -> Path:
    """The local copy of a remote artifact root: `s3://bucket/prefix` ->
    `<data>/artifact_cache/s3/bucket/prefix`. One per root, so two roots never mix."""
    scheme, _, rest = url.partition("://")
    parts = [p for p in rest.split("/") if p not in ("", ".", "..")]
    safe = [re.sub(r"[^A-Za-z0-9._=-]", "_", p) for p in [scheme or "remote", *parts]]
    return data_dir.joinpath("artifact_cache", *safe)
