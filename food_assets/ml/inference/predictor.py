"""Predict food classes from image files with an ONNX export or a trained-model bundle.

Both predictors read everything they need from the artifact itself (class names, preprocessing,
temperature), so `food-assets predict` and the demo need no registry lookups or config. A file
that does not decode is reported with a reason and skipped; it never stops the batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from food_assets.ml.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    open_image,
)
from food_assets.ml.data.transforms import ImagePipeline, Preprocess
from food_assets.ml.errors import CheckpointError, ConfigError, DataSourceError


@dataclass(frozen=True)
class PredictionResult:
    """One file's outcome: `top_k` on success, `error` (a short reason) on failure."""

    path: str
    top_k: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str | None:
        """The top-1 class, or None for a failed file."""
        return self.top_k[0][0] if self.top_k else None


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The one softmax (`ml.evaluation.metrics.softmax`, float64), rounded once to float32 as
    predictors answer."""
    from food_assets.ml.evaluation.metrics import softmax as softmax64

    return softmax64(logits, temperature).astype(np.float32)


class Predictor:
    """Images -> calibrated class probabilities. Subclasses implement `_logits`.

    Attributes:
        class_names: class order of the probability columns.
        model_name: registry name of the model.
        preprocess: how images are turned into tensors.
        temperature: divides the logits before the softmax (1.0 = uncalibrated).
    """

    class_names: tuple[str, ...]
    model_name: str
    preprocess: Preprocess
    temperature: float

    def _setup(
        self, model_name: str, class_names: Sequence[str], pre: Preprocess, t: float
    ) -> None:
        self.model_name = model_name
        self.class_names = tuple(class_names)
        self.preprocess = pre
        self.temperature = float(t)
        self._pipeline = ImagePipeline(pre, train=False)

    def _logits(self, batch: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def predict_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Probabilities `(N, C)` for a batch already preprocessed."""
        if len(batch) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return softmax(self._logits(batch), self.temperature)

    def predict_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Probabilities `(N, C)` (temperature applied) for decoded PIL images."""
        if not images:
            return self.predict_tensor(torch.empty(0))
        return self.predict_tensor(torch.stack([self._pipeline.from_image(im) for im in images]))

    def tensor_from_bytes(
        self, data: bytes, *, name: str = "<upload>", max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> torch.Tensor:
        """One encoded image (a file's bytes, e.g. an HTTP upload) -> a model-ready tensor.

        Decoded by `open_image` (full decode, same RGB rules as every other path), so a bad
        upload is an `ImageDecodeError` with the same short reasons as a bad file.
        """
        image = open_image(
            name, data=data, draft_size=self.preprocess.resize_size, max_pixels=max_pixels
        )
        return self._pipeline.from_image(image)

    def top_k(self, probs: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The `k` most probable classes of one probability row, best first (ties: class
        order), as (class name, probability); `k` below 1 gives one, above the class count
        gives them all."""
        order = np.argsort(-np.asarray(probs), kind="stable")[: max(1, k)]
        return [(self.class_names[i], float(probs[i])) for i in order]

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """Probabilities `(N, C)` for a preprocessed float32 NCHW batch (as `preprocess` says:
        size, normalisation), e.g. from a notebook's own data pipeline."""
        x = np.asarray(x, dtype=np.float32)
        size = self.preprocess.input_size
        if x.ndim != 4 or x.shape[1:] != (3, size, size):
            raise ConfigError(f"predict_array takes a (N, 3, {size}, {size}) batch, not {x.shape}")
        return self.predict_tensor(torch.from_numpy(np.ascontiguousarray(x)))

    def predict(
        self,
        paths_or_images: str | os.PathLike[str] | Image.Image | Sequence[Any],
        top_k: int = 5,
        batch_size: int = 32,
    ) -> list[PredictionResult]:
        """Top-k classes with probabilities for image files and/or PIL images (one or a list).

        A file that does not decode becomes an error result (it never stops the others); a PIL
        image gets the path `<image i>`.
        """
        items = (
            [paths_or_images]
            if isinstance(paths_or_images, str | os.PathLike | Image.Image)
            else list(paths_or_images)
        )
        images = {i: x for i, x in enumerate(items) if isinstance(x, Image.Image)}
        files = [str(x) for x in items if not isinstance(x, Image.Image)]
        by_file = iter(self.predict_paths(files, top_k=top_k, batch_size=batch_size))
        probs = self.predict_images(list(images.values())) if images else None
        rows = dict(zip(images, probs if probs is not None else [], strict=True))
        return [
            PredictionResult(f"<image {i}>", self.top_k(rows[i], top_k))
            if i in rows
            else next(by_file)
            for i in range(len(items))
        ]

    def predict_paths(
        self, paths: Iterable[str | os.PathLike[str]], top_k: int = 5, batch_size: int = 32
    ) -> Iterator[PredictionResult]:
        """One result per file, in input order; undecodable files become error results.

        Files are decoded lazily, so a long listing streams in batches of `batch_size`.
        """
        pending: list[tuple[str, torch.Tensor | ImageDecodeError]] = []

        def flush() -> Iterator[PredictionResult]:
            tensors = [x for _, x in pending if isinstance(x, torch.Tensor)]
            probs = self.predict_tensor(torch.stack(tensors)) if tensors else None
            j = 0
            for path, x in pending:
                if isinstance(x, ImageDecodeError):
                    yield PredictionResult(path, error=x.reason, detail=x.detail)
                    continue
                yield PredictionResult(path, self.top_k(probs[j], top_k))
                j += 1
            pending.clear()

        n_tensors = 0
        for path in paths:
            path = str(path)
            try:
                pending.append((path, self._pipeline(path)))
                n_tensors += 1
            except ImageDecodeError as exc:
                pending.append((path, exc))
            if n_tensors >= batch_size:
                yield from flush()
                n_tensors = 0
        if pending:
            yield from flush()


class OnnxPredictor(Predictor):
    """Runs an exported `.onnx` file with ONNX Runtime or OpenVINO; validates it first
    (`load_onnx`).

    The last line of defence of the serving rule: an int8 file that did not pass its accuracy
    gate is refused (`serving.int8_status`), and so is an OpenVINO variant that did not pass
    its own (`variants.ExportFacts`), whoever constructs the predictor.

    Attributes:
        precision: `fp32`, `bf16` or `int8`.
        backend: `onnxruntime` or `openvino`.
        choice: the `serving.ExportChoice` that picked this variant (`load_predictor` sets it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
        backend: str = "onnxruntime",
        precision: str | None = None,
    ) -> None:
        from food_assets.ml.export.onnx_export import create_session, load_onnx
        from food_assets.ml.inference.serving import ExportChoice, check_backend, int8_status

        self.path = Path(path)
        data, meta = load_onnx(self.path)
        self.backend = check_backend(backend)
        self.precision = precision or meta.precision
        if meta.precision == "int8" and self.backend == "onnxruntime":  # OpenVINO: its own
            ok, why = int8_status(meta.int8, None)
            if not ok:  # the last line of defence: a failed int8 file is never served
                raise ConfigError(
                    f"{self.path} is an int8 export that cannot be served: {why}. Serve the "
                    "fp32 export beside it (--precision fp32), or re-materialize onnx_<name>"
                )
        if (self.precision == "int8") != (meta.precision == "int8") or self.backend == "auto":
            raise ConfigError(
                f"{self.path} is a {meta.precision} file: it cannot run as {self.backend} "
                f"{self.precision}; use load_predictor(folder, precision=..., backend=...)"
            )
        self.choice = ExportChoice(
            self.path, self.precision, f"{self.precision} file given", self.backend
        )
        self._setup(meta.model_name, meta.class_names, meta.preprocess, meta.temperature)
        if self.backend == "openvino":
            self._check_openvino_gate()
            from food_assets.ml.export.openvino_runtime import OpenVinoRunner

            self._session = None
            self._run = OpenVinoRunner(self.path, self.precision, threads=threads, static=(1, 32))
        else:
            if self.precision == "bf16":
                raise ConfigError("ONNX Runtime serves fp32 and int8 here; bf16 is OpenVINO's")
            self._session = create_session(data, threads=threads, providers=providers)
            name = self._session.get_inputs()[0].name
            self._run = lambda x: self._session.run(None, {name: x})[0]

    def _check_openvino_gate(self) -> None:
        from food_assets.ml.export.quantize import INT8_SUFFIX
        from food_assets.ml.inference.variants import ExportFacts

        # The gates live in the fp32 file's record: read the folder's facts from it.
        fp32 = self.path
        if self.precision == "int8" and self.path.stem.endswith(INT8_SUFFIX):
            twin = self.path.with_name(self.path.stem[: -len(INT8_SUFFIX)] + self.path.suffix)
            fp32 = twin if twin.is_file() else self.path
        facts = ExportFacts.read(fp32)
        for c in facts.candidates:
            if (c.backend, c.precision) != (self.backend, self.precision):
                continue
            if c.ok and c.path is not None and c.path.resolve() == self.path.resolve():
                return
            if not c.ok:
                raise ConfigError(
                    f"{self.path} cannot be served by OpenVINO at {self.precision}: {c.why}. "
                    "Use --backend onnxruntime, or re-materialize onnx_<name>"
                )
        raise ConfigError(f"{self.path}: no OpenVINO {self.precision} variant was gated for it")

    def _logits(self, batch: torch.Tensor) -> np.ndarray:
        return self._run(np.ascontiguousarray(batch.numpy(), dtype=np.float32))


class TorchPredictor(Predictor):
    """Runs a trained-model bundle (`model.safetensors` + `card.json`) in eager PyTorch."""

    def __init__(self, bundle_dir: str | os.PathLike[str], *, device: str = "cpu") -> None:
        from food_assets.ml.export.metadata import validate_preprocess
        from food_assets.ml.models.bundle import load_bundle

        self.path = Path(bundle_dir)
        model, card = load_bundle(self.path, map_location=device)

        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"{self.path}/card.json: {what}; re-materialize the model")

        # load_bundle checks names and temperature; the preprocess fields are checked here too,
        # since a wrong size or std would silently feed the model garbage.
        pre = validate_preprocess(card.preprocess.to_dict(), bad)
        self._setup(card.name, card.class_names, pre, card.temperature)
        self.device = torch.device(device)
        self._model = model.to(self.device).eval()

    @torch.inference_mode()
    def _logits(self, batch: torch.Tensor) -> np.ndarray:
        out = self._model(batch.to(self.device)).float().cpu().numpy()
        if out.ndim != 2 or out.shape[1] != len(self.class_names):
            raise CheckpointError(
                f"{self.path}: the model returns shape {out.shape}, not (N, "
                f"{len(self.class_names)}) as card.json's class names say"
            )
        return out


def load_predictor(
    path: str | os.PathLike[str], *, precision: str = "auto", backend: str = "auto", **kwargs
) -> Predictor:
    """An `OnnxPredictor` for a `.onnx` file or an `onnx_<name>` folder, a `TorchPredictor` for
    a bundle folder.

    For ONNX, `precision` and `backend` pick the variant (`serving.choose_export`: `auto` serves
    the fastest variant that passed its gates); the predictor's `choice` says which and why. A
    bundle is fp32 PyTorch: `int8`, `bf16` and `--backend openvino` are refused there.

    Raises:
        ConfigError: a precision that is unknown or cannot be served from `path`.
        CheckpointError: `path` is none of the above, or unreadable.
    """
    from food_assets.ml.inference.kinds import ONNX, artifact_kind
    from food_assets.ml.inference.serving import check_backend, check_precision, choose_export

    check_precision(precision)
    check_backend(backend)
    path = Path(path)
    if artifact_kind(path) == ONNX:  # what the artifact records, not its file name
        choice = choose_export(path, precision, backend)
        predictor = OnnxPredictor(
            choice.path, backend=choice.backend, precision=choice.precision, **kwargs
        )
        predictor.choice = choice
        return predictor
    if precision in ("int8", "bf16") or backend == "openvino":
        what = precision if precision != "auto" else "OpenVINO"
        raise ConfigError(
            f"{path} is a PyTorch bundle (fp32); {what} needs its ONNX export: materialize "
            "onnx_<name> and point at it, or use --precision auto"
        )
    return TorchPredictor(path, **kwargs)


def iter_image_files(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, recursive: bool = True
) -> Iterator[Path]:
    """Image files under the given files/folders, sorted, hidden files and folders skipped.

    A file named explicitly is yielded whatever its extension (the user asked for it; a bad one
    becomes an error result at prediction time); inside folders only image extensions count.

    Raises:
        DataSourceError: a path that does not exist.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    for p in map(Path, paths):
        if p.is_file():
            yield p
        elif p.is_dir():
            yield from _walk(p, recursive)
        else:
            raise DataSourceError(f"{p} does not exist: pass an image file or a folder of images")


def _walk(root: Path, recursive: bool) -> Iterator[Path]:
    # Symlinked folders are not entered: one `up -> ..` link would list the tree again and
    # again, two would branch 2^40 ways before the kernel's link limit stops it. Symlinked
    # files are kept; a folder that cannot be listed is passed over like a hidden one.
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        path = Path(e.path)
        try:
            if e.is_dir(follow_symlinks=False):
                if recursive:
                    yield from _walk(path, recursive)
            elif e.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                yield path
        except OSError:  # vanished or unreadable while we walk: nothing to predict
            continue
