"""Which models are materialized, which one is best, and how to load one: for the CLI and the
demo (no Dagster; torch only inside `load_predictor`).

Everything is found through `food_assets.layout` under the artifact root
(`food_assets.storage`: the data folder, or FOOD_ASSETS_ARTIFACT_ROOT, which may be an
object-store URL such as `s3://bucket/prefix`):

    artifacts/model_<name>/bundle/                 the trained-model bundle
    artifacts/onnx_<name>/model.onnx               the ONNX export (temperature embedded)
    artifacts/evaluation_<name>/metrics.json       test metrics (`test/acc_top1`, ...)
    artifacts/evaluation_<name>/calibration.json   the temperature fitted on val

Listing reads only these small files; `load_predictor` fetches the model's files into the local
copy of the root first (nothing to fetch for a local root).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from food_assets import layout
from food_assets.storage import ArtifactStorage, default_data_dir

if TYPE_CHECKING:
    from food_assets.ml.inference.predictor import Predictor
    from food_assets.tracking.model_registry import RegistryVersion

#: Root-relative paths: `layout` functions applied to this give `artifacts/<asset>/...`.
_REL = PurePosixPath()
CALIBRATION_VERSION = 1


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    return Path(override or default_data_dir()).expanduser().resolve()


def open_storage(
    root: str | os.PathLike[str] | ArtifactStorage | None = None,
    *,
    artifact_root: str | None = None,
) -> ArtifactStorage:
    """The artifact root for a data folder (`root`, default FOOD_ASSETS_DATA_DIR or ./data):
    FOOD_ASSETS_ARTIFACT_ROOT (or `artifact_root`) when set, else the data folder itself."""
    if isinstance(root, ArtifactStorage):
        return root
    return ArtifactStorage.from_env(data_dir=data_dir(root), artifact_root=artifact_root)


@dataclass(frozen=True)
class MaterializedModel:
    """One model with a bundle or an ONNX export under the artifact root.

    Attributes:
        bundle_dir, onnx_path: where they are in the local copy of the root (for a remote root
            they exist there once `fetch_model` or `load_predictor` fetched them).
        metrics: `evaluation_<name>`'s metrics.json ({} when not evaluated).
        temperature: the temperature a bundle is used with: `evaluation_<name>`'s
            calibration.json, else 1.0 (uncalibrated). None: the artifact's own (a bundle or
            export given by path). An ONNX export always carries its own, taken from the
            evaluation when it was exported.
    """

    name: str
    bundle_dir: Path | None
    onnx_path: Path | None
    metrics: dict
    temperature: float | None = None
    calibrated: bool = False
    storage: ArtifactStorage | None = field(default=None, compare=False, repr=False)
    registry: RegistryVersion | None = None  # set for a model loaded from the MLflow registry

    @property
    def best_path(self) -> Path | None:
        """What inference should load: the ONNX export if there is one, else the bundle."""
        return self.onnx_path or self.bundle_dir

    @property
    def accuracy(self) -> float | None:
        """Test top-1 accuracy from the evaluation, or None when there is none."""
        acc = self.metrics.get("test/acc_top1")
        if isinstance(acc, bool) or not isinstance(acc, int | float) or not math.isfinite(acc):
            return None
        return float(acc)

    def temperature_note(self) -> str:
        """How the probabilities of a bundle are calibrated, in words."""
        if self.temperature is None:
            return "temperature from the artifact itself"
        if self.registry is not None:
            how = "calibrated by its evaluation" if self.calibrated else "uncalibrated, as trained"
            return f"temperature {self.temperature:.4g} from {self.registry.uri} tags ({how})"
        if self.calibrated:
            return (
                f"temperature {self.temperature:.4g} from evaluation_{self.name} (calibration.json)"
            )
        return (
            f"temperature 1.0 (uncalibrated): evaluation_{self.name} is not materialized, so "
            "no calibration was fitted"
        )


def bundle_path(name: str, root: Path | None = None) -> Path:
    """`model_<name>`'s bundle under a local root (default: the data folder)."""
    return layout.bundle_dir(root or data_dir(), name)


def onnx_path(name: str, root: Path | None = None) -> Path:
    """`onnx_<name>`'s export under a local root (default: the data folder)."""
    return layout.onnx_file(root or data_dir(), name)


# -- calibration.json ----------------------------------------------------------------------------


def calibration_record(temperature: float, **details: Any) -> dict[str, Any]:
    """What `evaluation_<name>` writes to its calibration.json."""
    return {"version": CALIBRATION_VERSION, "temperature": float(temperature), **details}


def parse_temperature(text: str, source: str = "calibration.json") -> float:
    """The temperature in a calibration.json; a `CheckpointError` when it is not one."""
    from food_assets.ml.errors import CheckpointError

    try:
        t = float(json.loads(text)["temperature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{source} holds no temperature ({exc}); materialize the evaluation again"
        ) from None
    if not (math.isfinite(t) and t > 0):
        raise CheckpointError(f"{source}: temperature must be a positive number (got {t})")
    return t


def load_temperature(path: str | os.PathLike[str]) -> float:
    """The temperature in a local calibration.json file."""
    return parse_temperature(Path(path).read_text(encoding="utf-8"), str(path))


# -- listing and ranking -------------------------------------------------------------------------


def _read(storage: ArtifactStorage, rel: PurePosixPath) -> str | None:
    _, asset, *inside = rel.parts
    return storage.read_text(asset, "/".join(inside))


def _exists(storage: ArtifactStorage, rel: PurePosixPath) -> bool:
    _, asset, *inside = rel.parts
    return storage.exists(asset, "/".join(inside))


def _metrics(storage: ArtifactStorage, name: str) -> dict:
    text = _read(storage, layout.metrics_file(_REL, name))
    try:
        metrics = json.loads(text) if text else {}
    except ValueError:
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _calibration(storage: ArtifactStorage, name: str) -> float | None:
    text = _read(storage, layout.calibration_file(_REL, name))
    if text is None:
        return None
    from food_assets.ml.errors import FoodAssetsError

    try:
        return parse_temperature(text)
    except FoodAssetsError:
        return None  # an unreadable calibration counts as none: temperature 1.0, said so


def list_materialized(
    root: str | os.PathLike[str] | ArtifactStorage | None = None,
    *,
    artifact_root: str | None = None,
) -> list[MaterializedModel]:
    """Every model with a bundle or an ONNX export under the artifact root, sorted by name.

    Args:
        root: the data folder (default FOOD_ASSETS_DATA_DIR or ./data) or an `ArtifactStorage`.
        artifact_root: overrides FOOD_ASSETS_ARTIFACT_ROOT.
    """
    storage = open_storage(root, artifact_root=artifact_root)
    names = set()
    for asset in storage.list_assets():
        name = layout.model_name_of(asset)
        if name and asset.startswith(("model_", "onnx_")):
            names.add(name)
    found = []
    for name in sorted(names):
        has_bundle = _exists(storage, layout.card_file(_REL, name))
        has_onnx = _exists(storage, layout.onnx_file(_REL, name))
        if not (has_bundle or has_onnx):
            continue
        temperature = _calibration(storage, name)
        found.append(
            MaterializedModel(
                name=name,
                bundle_dir=layout.bundle_dir(storage.local, name) if has_bundle else None,
                onnx_path=layout.onnx_file(storage.local, name) if has_onnx else None,
                metrics=_metrics(storage, name),
                temperature=1.0 if temperature is None else temperature,
                calibrated=temperature is not None,
                storage=storage,
            )
        )
    return found


def best_model(models: Iterable[MaterializedModel]) -> MaterializedModel | None:
    """The model `predict` and the demo use when none is named. One rule:

    the highest test top-1 accuracy (`evaluation_<name>`'s metrics.json) among the models with
    a bundle or an ONNX export; a model without an evaluation ranks after every evaluated one;
    equal accuracies go to the name that sorts first. None when there is no model.
    """
    ranked = sorted(models, key=lambda m: (m.accuracy is None, -(m.accuracy or 0.0), m.name))
    return ranked[0] if ranked else None


def registry_model(
    ref: str, data: str | os.PathLike[str] | None = None, *, uri: str | None = None
) -> MaterializedModel:
    """A catalog entry for a registered version (`champion`, `models:/...`): its bundle, logged
    under `bundle/` in the version's run, downloaded once into `<data dir>/cache/mlflow_models/`,
    with the temperature from the version's tags (the leaderboard records the evaluation's).

    Raises `UnknownModelError` for a name, alias or version the registry does not have and
    `CheckpointError` when the version's label map disagrees with its bundle.
    """
    from food_assets.tracking import model_registry as registry

    uri = uri or registry.registry_uri(data)
    found = registry.find_registered_version(ref, uri=uri)
    bundle = registry.download_bundle(found, uri, data_dir(data))
    temperature, calibrated = 1.0, False
    try:
        temperature = float(found.tags.get("temperature", "1.0"))
        calibrated = found.tags.get("temperature_source") == registry.TEMPERATURE_FROM_EVALUATION
    except ValueError:
        pass
    if not (math.isfinite(temperature) and temperature > 0):
        temperature, calibrated = 1.0, False
    metrics = {}
    with contextlib.suppress(KeyError, ValueError):
        metrics["test/acc_top1"] = float(found.tags["test_acc_top1"])
    return MaterializedModel(
        name=found.uri,
        bundle_dir=bundle,
        onnx_path=None,
        metrics=metrics,
        temperature=temperature,
        calibrated=calibrated,
        registry=found,
    )


# -- loading -------------------------------------------------------------------------------------


def fetch_model(
    entry: MaterializedModel, *, bundle: bool = True, onnx: bool = True
) -> MaterializedModel:
    """Make the entry's files real in the local copy of its root (a no-op for a local root)."""
    storage = entry.storage
    if storage is None or not storage.is_remote:
        return entry
    if onnx and entry.onnx_path is not None:
        storage.fetch(layout.onnx_asset(entry.name), prefix=layout.ONNX_FILE)
        storage.fetch(layout.onnx_asset(entry.name), prefix=layout.ONNX_INT8_FILE)
    if bundle and entry.bundle_dir is not None:
        storage.fetch(layout.model_asset(entry.name), prefix=layout.BUNDLE_DIR)
    return entry


def load_predictor(entry: MaterializedModel, **kwargs: Any) -> Predictor:
    """A predictor for the entry's best artifact (ONNX export, else bundle), fetched first.

    A bundle answers with `entry.temperature` (the evaluation's calibration, or 1.0 when the
    model was never evaluated: `temperature_note` says which); an ONNX export with the
    temperature embedded in it. `precision=` (`auto`, `fp32`, `int8`) picks the fp32 export or
    its int8 twin (`food_assets.ml.inference.serving`).
    """
    from food_assets.ml.inference.predictor import load_predictor as load_artifact

    path = entry.best_path
    if path is None:
        from food_assets.ml.errors import CheckpointError

        raise CheckpointError(f"model {entry.name!r} has neither a bundle nor an ONNX export")
    is_bundle = entry.onnx_path is None
    fetch_model(entry, bundle=is_bundle, onnx=not is_bundle)
    predictor = load_artifact(path, **kwargs)
    if is_bundle and entry.temperature is not None:
        predictor.temperature = float(entry.temperature)  # the evaluation's, not the card's
    return predictor
