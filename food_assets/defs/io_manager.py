"""The project's IO manager: every asset's value as a small JSON record in its own folder.

`<root>/artifacts/<asset>/value.json` (`food_assets.layout.record_file`) holds the value as a
type tag and fields, generically over the project's dataclasses (`RawImages`, `SplitManifest`,
`TrainedModel`, `EvaluationReport`, `OnnxExport`, `Skipped`, ...) and plain values:

    {"$type": "food_assets.defs.assets.models:TrainedModel", "fields": {...}}
    {"$path": "artifacts/model_custom_cnn/bundle"}       a path under the artifact root, relative
    {"$abspath": "/srv/food101"}                         a path outside it (source images)
    {"$frame": "artifacts/leaderboard/value.parquet"}   a DataFrame, stored next to it
    {"$tuple": [...]}, {"$float": "nan"}, {"$dict": [[key, value], ...]}

Paths under the root are written relative to it and resolved, on load, against the loading
machine's local copy of the root, after the referenced files were fetched there
(`ArtifactStorage.fetch`; nothing to do for a local root). So a value written on one machine
reads on another, and no value is ever unpickled: a record names only dataclasses defined in
`food_assets`, built from their fields (ADR 0009).
"""

# No `from __future__ import annotations`: Dagster reads the real annotation of the resource
# attribute (a string would not be recognised as a resource dependency).

import dataclasses
import importlib
import math
from pathlib import Path, PurePath
from typing import Any

import dagster as dg

from food_assets import layout
from food_assets.defs.resources import ArtifactStore
from food_assets.ml.errors import FoodAssetsError
from food_assets.storage import ArtifactStorage, StoredValueError

#: A record may only name dataclasses from this package.
TRUSTED_PACKAGE = "food_assets"

#: Where the records' modules live now, by the name an older artifact root may hold: values
#: written before the Dagster code moved under `food_assets/defs/` (ADR 0026) still load.
RENAMED_MODULES = {
    f"food_assets.assets.{m}": f"food_assets.defs.assets.{m}"
    for m in ("_common", "data", "models", "evaluation", "explain", "export", "batch")
}


def asset_name(key: dg.AssetKey) -> str:
    """The folder name of an asset (`model_custom_cnn`; a prefixed key joins with `__`)."""
    return "__".join(key.path)


class _Encoder:
    def __init__(self, storage: ArtifactStorage, asset: str) -> None:
        self.storage = storage
        self.asset = asset
        self.frames = 0

    def encode(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, PurePath):
            rel = self.storage.relative(value)
            return {"$path": rel} if rel is not None else {"$abspath": str(value)}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            cls = type(value)
            if not cls.__module__.startswith(TRUSTED_PACKAGE + "."):
                raise TypeError(
                    f"{self.asset}: the IO manager stores dataclasses from {TRUSTED_PACKAGE} "
                    f"only, not {cls.__module__}.{cls.__qualname__}"
                )
            fields = {
                f.name: self.encode(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if f.init
            }
            return {"$type": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v) for v in value]}
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: self.encode(v) for k, v in value.items()}
            return {"$dict": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        if _is_frame(value):
            return self._frame(value)
        if type(value).__module__ == "numpy" and hasattr(value, "item"):
            return self.encode(value.item())  # a numpy scalar
        raise TypeError(
            f"{self.asset}: the IO manager cannot store a {type(value).__name__}; return a "
            "dataclass of plain fields (str, numbers, paths, tuples, dicts) or a DataFrame"
        )

    def _frame(self, frame: Any) -> dict[str, str]:
        from food_assets.ml.artifacts import atomic_path

        self.frames += 1
        folder = self.storage.local_dir(self.asset)
        path = (
            folder / layout.FRAME_FILE
            if self.frames == 1
            else folder / f"value-{self.frames}.parquet"
        )
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp)
        rel = self.storage.relative(path)
        assert rel is not None  # the asset folder is inside the root
        return {"$frame": rel}


def _is_frame(value: Any) -> bool:
    cls = type(value)
    return cls.__name__ == "DataFrame" and cls.__module__.startswith("pandas.")


class _Decoder:
    def __init__(self, storage: ArtifactStorage, asset: str) -> None:
        self.storage = storage
        self.asset = asset
        #: (asset folder, path inside it) of every stored path, fetched before the value is used.
        self.needed: set[tuple[str, str | None]] = set()

    def decode(self, data: Any) -> Any:
        if isinstance(data, list):
            return [self.decode(v) for v in data]
        if not isinstance(data, dict):
            return data
        if "$path" in data:
            return self._local(data["$path"])
        if "$abspath" in data:
            return Path(data["$abspath"])
        if "$frame" in data:
            import pandas as pd

            return pd.read_parquet(self._local(data["$frame"]))
        if "$tuple" in data:
            return tuple(self.decode(v) for v in data["$tuple"])
        if "$float" in data:
            return float(data["$float"])
        if "$dict" in data:
            return {self.decode(k): self.decode(v) for k, v in data["$dict"]}
        if "$type" in data:
            return self._dataclass(data["$type"], data.get("fields") or {})
        return {k: self.decode(v) for k, v in data.items()}

    def _local(self, rel: str) -> Path:
        parts = rel.split("/")
        if len(parts) >= 2 and parts[0] == layout.ARTIFACTS:
            self.needed.add((parts[1], "/".join(parts[2:]) or None))
        return self.storage.resolve(rel)

    def _dataclass(self, tag: str, fields: dict[str, Any]) -> Any:
        module, _, qualname = str(tag).partition(":")
        module = RENAMED_MODULES.get(module, module)
        if not module.startswith(TRUSTED_PACKAGE + ".") or not qualname:
            raise StoredValueError(
                f"the stored value of {self.asset} names {tag!r}, not a {TRUSTED_PACKAGE} type; "
                f"materialize {self.asset} again"
            )
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            raise StoredValueError(
                f"the stored value of {self.asset} is a {tag}, which this version of "
                f"food_assets does not define; materialize {self.asset} again"
            ) from None
        if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
            raise StoredValueError(f"the stored value of {self.asset} names {tag}: not a record")
        try:
            return obj(**{k: self.decode(v) for k, v in fields.items()})
        except TypeError as exc:
            raise StoredValueError(
                f"the stored value of {self.asset} does not fit {tag} any more ({exc}); "
                f"materialize {self.asset} again"
            ) from None


def encode_value(value: Any, storage: ArtifactStorage, asset: str) -> Any:
    """`value` as JSON-ready data; DataFrames are written into the asset's local folder."""
    return _Encoder(storage, asset).encode(value)


def decode_value(data: Any, storage: ArtifactStorage, asset: str) -> Any:
    """The value a record holds, its paths resolved in this machine's local copy of the root
    and the files they name fetched there first."""
    decoder = _Decoder(storage, asset)
    value = decoder.decode(data)
    for folder, inside in sorted(decoder.needed, key=lambda t: (t[0], t[1] or "")):
        storage.fetch(folder, prefix=inside)
    return value


class AssetValueIOManager(dg.ConfigurableIOManager):
    """Stores each asset's value as `<root>/artifacts/<asset>/value.json` (see the module
    docstring); for a remote root, publishes the asset's folder on output and fetches what a
    loaded value points at on input."""

    artifact_store: dg.ResourceDependency[ArtifactStore]

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not context.has_asset_key:
            raise dg.Failure(f"{context.step_key}: the food_assets IO manager stores assets only")
        storage = self.artifact_store.storage
        asset = asset_name(context.asset_key)
        storage.local_dir(asset).mkdir(parents=True, exist_ok=True)
        record = storage.commit(asset, encode_value(obj, storage, asset))
        context.add_output_metadata(
            {
                # `path` is the key Dagster's own IO managers use for where the value went.
                "path": dg.MetadataValue.path(
                    storage.location(layout.record_file(storage.local, asset))
                ),
                "stored_files": len(record["files"]),
            }
        )

    def load_input(self, context: dg.InputContext) -> Any:
        storage = self.artifact_store.storage
        asset = asset_name(context.asset_key)
        try:
            record = storage.read_record(asset)
            if record is None:
                raise StoredValueError(
                    f"{asset} has no stored value under {storage.url} "
                    f"({layout.record_file(Path(), asset).as_posix()}): materialize {asset} first"
                )
            return decode_value(record.get("value"), storage, asset)
        except FoodAssetsError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
