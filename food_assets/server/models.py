"""The model a server answers with: resolved once through the project's resolver, loaded through
`catalog.load_predictor` (the serving rule, `choose_export`), and swapped in the background when
the `champion` alias moves.

No Dagster here; MLflow only through `food_assets.model_registry` (for registry references).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from food_assets.catalog import MaterializedModel
    from food_assets.ml.inference.predictor import Predictor

log = logging.getLogger("food_assets.server")


@dataclass(frozen=True)
class ServedModel:
    """A loaded predictor and what the answers say about it.

    Attributes:
        predictor: the loaded predictor (ONNX Runtime or eager PyTorch).
        ref: the reference it was asked for (`champion`, a name, a `models:/` URI, a path).
        source: where it came from, in words (`models:/...`, a path under the artifact root).
        version: the registered version, or None for a model not loaded from the registry.
        backend: `onnxruntime` or `torch`.
        precision: `fp32` or `int8`.
        reason: why this precision (the serving rule's reason).
    """

    predictor: Predictor
    ref: str
    source: str
    version: str | None
    backend: str
    precision: str
    reason: str

    @property
    def name(self) -> str:
        return self.predictor.model_name

    @property
    def num_classes(self) -> int:
        return len(self.predictor.class_names)

    def tensor(self, data: bytes, max_pixels: int) -> torch.Tensor:
        """Decode and preprocess one upload for this model (`ImageDecodeError` when bad)."""
        return self.predictor.tensor_from_bytes(data, max_pixels=max_pixels)


def resolve_reference(ref: str | None, data: Path) -> Path | MaterializedModel:
    """What `ref` names, by the rules `food-assets predict` uses (`cli.predict._resolve_model`):
    `champion` / `models:/...` -> the registry (`model_registry.registry_model`); an existing
    path -> that path; a name -> the catalog entry; None -> `catalog.best_model`.

    The one place the server resolves; when the catalog gains a single resolver, this calls it.

    Raises:
        FoodAssetsError: a reference that names nothing (one line saying what to do).
    """
    from food_assets import catalog, model_registry
    from food_assets.ml.errors import UnknownModelError

    if model_registry.is_registry_reference(ref):
        return model_registry.registry_model(ref, data)
    if ref is not None and ("/" in ref or ref.endswith(".onnx")) and Path(ref).exists():
        return Path(ref)
    storage = catalog.open_storage(data)
    found = catalog.list_materialized(storage)
    if ref is None:
        best = catalog.best_model(found)
        if best is None:
            raise UnknownModelError(
                f"no materialized model under {storage.url}: run `food-assets train custom_cnn` "
                "first, or pass --model champion / a path"
            )
        return best
    for entry in found:
        if entry.name == ref:
            return entry
    names = ", ".join(m.name for m in found) or "none"
    raise UnknownModelError(
        f"no materialized model {ref!r} under {storage.url} (materialized: {names}); pass a "
        "name, `champion`, a models:/ URI or a path to a bundle / .onnx file"
    )


def load_served(ref: str | None, data: Path, precision: str = "auto") -> ServedModel:
    """Resolve `ref` and load its predictor by the serving rule (`precision`: auto/fp32/int8)."""
    from food_assets import catalog
    from food_assets.ml.inference.predictor import OnnxPredictor, load_predictor

    choice = resolve_reference(ref, data)
    version = None
    if isinstance(choice, Path):
        predictor = load_predictor(choice, precision=precision)
        source = str(choice)
    else:
        predictor = catalog.load_predictor(choice, precision=precision)
        if choice.registry is not None:
            version, source = choice.registry.version, choice.registry.version_uri
        else:
            source = str(choice.best_path)
    served = getattr(predictor, "choice", None)
    onnx = isinstance(predictor, OnnxPredictor)
    return ServedModel(
        predictor=predictor,
        ref=ref or "best",
        source=source,
        version=version,
        backend="onnxruntime" if onnx else "torch",
        precision=served.precision if served is not None else "fp32",
        reason=served.reason if served is not None else "PyTorch bundle (fp32)",
    )


def registered_version(ref: str, data: Path) -> str:
    """The version a registry reference points at now (one small registry query)."""
    from food_assets import model_registry

    uri = model_registry.registry_uri(data)
    return model_registry.find_registered_version(ref, uri=uri).version


class ModelSlot:
    """The model answering now. Readers take `current` once per batch, so a swap never changes
    a model under a batch already running: the old one finishes what it started."""

    def __init__(self) -> None:
        self._current: ServedModel | None = None
        self._lock = threading.Lock()
        self.error: str | None = None  # why the first load failed, for /ready
        self.swaps = 0

    @property
    def current(self) -> ServedModel | None:
        return self._current

    def set(self, model: ServedModel) -> None:
        with self._lock:
            if self._current is not None:
                self.swaps += 1
            self._current = model


class ChampionWatcher(threading.Thread):
    """Polls the registry every `interval_s` seconds; when the alias points at another version,
    loads it in this thread and swaps it in. A failed poll or load keeps the model in place
    (logged): the server never stops answering because the registry hiccupped."""

    def __init__(
        self,
        slot: ModelSlot,
        ref: str,
        data: Path,
        *,
        precision: str = "auto",
        interval_s: float = 30.0,
        on_swap: Callable[[ServedModel], None] | None = None,
    ) -> None:
        super().__init__(name="champion-watcher", daemon=True)
        self.slot, self.ref, self.data = slot, ref, data
        self.precision, self.interval_s = precision, interval_s
        self.on_swap = on_swap
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def check(self) -> bool:
        """One poll; True when a new version was swapped in."""
        current = self.slot.current
        try:
            version = registered_version(self.ref, self.data)
            if current is not None and version == current.version:
                return False
            model = load_served(self.ref, self.data, self.precision)
        except Exception as exc:  # a registry or download hiccup must not end the watcher
            log.warning("champion check failed, keeping the current model: %s", exc)
            return False
        self.slot.set(model)
        log.info("swapped in %s version %s", model.name, model.version)
        if self.on_swap is not None:
            self.on_swap(model)
        return True

    def stop(self) -> None:
        self._stop.set()
