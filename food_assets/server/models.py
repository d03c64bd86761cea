"""The model a server answers with: resolved once through the project's resolver, loaded through
`catalog.load_predictor` (the serving rule, `choose_export`), and swapped in the background when
the `champion` alias moves.

No Dagster here; MLflow only through `food_assets.tracking.model_registry` (registry references).
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
        backend: `onnxruntime`, `openvino` or `torch`.
        precision: `fp32`, `bf16` or `int8`.
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


def resolve_reference(ref: str | None, data: Path) -> MaterializedModel:
    """What `ref` names, by the project's one resolver (`food_assets.resolver.resolve_model`):
    `champion` / `models:/...` -> the registry; a name -> the catalog entry; a path -> what the
    artifact records it is; None -> the champion, else (said in the log) the most accurate model.

    Raises:
        FoodAssetsError: a reference that names nothing (one line saying what to do).
    """
    from food_assets.resolver import resolve_model

    resolved = resolve_model(ref, data)
    log.info("serving %s", resolved.how)
    return resolved.model


def load_served(
    ref: str | None, data: Path, precision: str = "auto", backend: str = "auto"
) -> ServedModel:
    """Resolve `ref` and load its predictor by the serving rule (`precision`: auto, fp32, bf16,
    int8; `backend`: auto, onnxruntime, openvino)."""
    from food_assets import catalog

    choice = resolve_reference(ref, data)
    version = None
    predictor = catalog.load_predictor(choice, precision=precision, backend=backend)
    if choice.registry is not None:
        version, source = choice.registry.version, choice.registry.version_uri
    else:
        source = str(choice.best_path)
    served = getattr(predictor, "choice", None)
    return ServedModel(
        predictor=predictor,
        ref=ref or "best",
        source=source,
        version=version,
        backend=served.backend if served is not None else "torch",
        precision=served.precision if served is not None else "fp32",
        reason=served.reason if served is not None else "PyTorch bundle (fp32)",
    )


def registered_version(ref: str, data: Path) -> str:
    """The version a registry reference points at now (one small registry query)."""
    from food_assets.tracking import model_registry

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
        backend: str = "auto",
        interval_s: float = 30.0,
        on_swap: Callable[[ServedModel], None] | None = None,
    ) -> None:
        super().__init__(name="champion-watcher", daemon=True)
        self.slot, self.ref, self.data = slot, ref, data
        self.precision, self.backend, self.interval_s = precision, backend, interval_s
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
            model = load_served(self.ref, self.data, self.precision, self.backend)
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
