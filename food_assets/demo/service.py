"""The demo's service, with no UI: what the Gradio page (`food_assets.demo.page`) calls.

`DemoService` lists the materialized models (`food_assets.catalog`, under the artifact root:
the data folder or FOOD_ASSETS_ARTIFACT_ROOT), preselects the default of
`food_assets.resolver` (the champion, the rule `food-assets predict` uses too), loads each one
once (an ONNX export when there is one, else the bundle with its evaluation's temperature; plus
the bundle's PyTorch network for Grad-CAM),
and turns an uploaded file into a prediction with a Grad-CAM overlay, or a clear message. It
imports no Gradio, so it can be used (and benchmarked) without the web layer.

Heavy imports (torch, onnxruntime) happen inside functions, so importing this module stays
cheap for the CLI.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from food_assets import catalog, layout
from food_assets.catalog import MaterializedModel

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from food_assets.ml.inference.predictor import Predictor

log = logging.getLogger(__name__)

#: Bundled example photos (rendered by `food_assets.ml.data.sample.render_sample_image`).
STATIC_DIR = Path(__file__).parents[1] / "assets_static"
TOP_K = 3
MIB = 1024 * 1024
#: Overlays are upscaled to at least this many pixels a side: a 48 px sample model's map is
#: otherwise a postage stamp on the page.
OVERLAY_MIN_PX = 256

NO_MODEL_MESSAGE = (
    "**No trained model found** under `{root}`.\n\n"
    "Make one first, then reload this page:\n\n"
    "- `make run` materializes the whole asset graph on the embedded sample (offline, a few "
    "minutes on a laptop CPU), or\n"
    "- `food-assets train custom_cnn` trains a single model.\n\n"
    "Set `FOOD_ASSETS_DATA_DIR` (or `--data-dir`), or `FOOD_ASSETS_ARTIFACT_ROOT` for an "
    "artifact root elsewhere (`s3://bucket/prefix`), if your runs write somewhere else."
)


def example_images() -> list[Path]:
    """The bundled example photos, sorted by name."""
    return sorted(p for p in STATIC_DIR.glob("*.jpg") if p.is_file())


@dataclass
class DemoResult:
    """One request's outcome for the page.

    Attributes:
        top: class -> probability for the top 3 classes (empty on error).
        overlay: Grad-CAM heat map over the model input (uint8 RGB), or None.
        info: Markdown about the model that answered (and why there is no overlay, if so).
        message: Markdown error/help text; empty on success.
    """

    top: dict[str, float] = field(default_factory=dict)
    overlay: np.ndarray | None = None
    info: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.message and bool(self.top)


@dataclass
class LoadedModel:
    """A model loaded once: the predictor plus, when the bundle is there, its Grad-CAM parts."""

    entry: MaterializedModel
    predictor: Predictor
    source: Path
    cam_model: Any = None  # nn.Module, a separate copy: Grad-CAM hooks must not see other calls
    cam_layer: Any = None
    cam_reshape: Any = None
    cam_preprocess: Any = None
    cam_class_index: dict[str, int] = field(default_factory=dict)
    cam_note: str = ""
    # Grad-CAM registers hooks on `cam_model`: two requests at once would mix their activations.
    cam_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.predictor.model_name


def load_model(entry: MaterializedModel, precision: str = "auto") -> LoadedModel:
    """Load the predictor (ONNX first, it is faster) and the bundle's network for Grad-CAM.

    Through `catalog.load_predictor`: the files are fetched from a remote root first, and a
    bundle answers with its evaluation's temperature (1.0 when it was never evaluated).
    `precision` picks the fp32 export or its int8 twin (`food_assets.ml.inference.serving`: a
    failed int8 export is never served)."""
    assert entry.best_path is not None  # the catalog lists only models with something on disk
    predictor = catalog.load_predictor(entry, precision=precision)
    source = Path(getattr(predictor, "path", entry.best_path))
    loaded = LoadedModel(entry=entry, predictor=predictor, source=source)
    _attach_gradcam(loaded)
    return loaded


def _attach_gradcam(loaded: LoadedModel) -> None:
    from food_assets.ml.errors import FoodAssetsError
    from food_assets.ml.models.registry import get_model_spec, resolve_cam_layer

    name = loaded.name
    if loaded.entry.bundle_dir is None:
        loaded.cam_note = (
            f"Grad-CAM needs the trained-model bundle (materialize `model_{name}`); only the "
            "ONNX export is on disk, so this shows the prediction alone."
        )
        return
    try:
        spec = get_model_spec(name)
    except FoodAssetsError:
        loaded.cam_note = f"Grad-CAM is off: `{name}` is not in this version's model registry."
        return
    if not spec.cam_layer:
        loaded.cam_note = f"Grad-CAM is off: `{name}` has no Grad-CAM layer in its registry entry."
        return
    from food_assets.ml.models.bundle import load_bundle

    catalog.fetch_model(loaded.entry, onnx=False)
    model, card = load_bundle(loaded.entry.bundle_dir)
    missing = set(loaded.predictor.class_names) - set(card.class_names)
    if missing:
        # A stale ONNX export next to a retrained bundle: explaining the wrong classes misleads.
        loaded.cam_note = (
            f"Grad-CAM is off: the bundle and the ONNX export of `{name}` disagree on the "
            f"classes; re-materialize `onnx_{name}`."
        )
        return
    # Only the activations need gradients (compute_cams makes the input require them): frozen
    # weights skip every weight gradient in the backward pass, about a third of a request's time.
    model.requires_grad_(False)
    loaded.cam_model = model
    loaded.cam_layer = resolve_cam_layer(model, spec.cam_layer)
    loaded.cam_reshape = spec.cam_reshape
    loaded.cam_preprocess = card.preprocess
    loaded.cam_class_index = {c: i for i, c in enumerate(card.class_names)}


class DemoService:
    """What the page calls: model listing, one load per model, predictions and messages.

    Thread-safe: Gradio runs handlers in a thread pool.

    Args:
        data_dir: data folder of the runs (default `FOOD_ASSETS_DATA_DIR` or `./data`).
        max_upload_mb: larger uploads are refused with a message.
        default_model: a materialized model name, `champion` or a `models:/` URI (a version
            in the MLflow registry), or a path to a bundle folder / `.onnx` file; None: the
            default of `food_assets.resolver` (the champion, else the most accurate model, said
            in `default_how`).
        precision: `auto` (int8 when it passed its accuracy gate and was measured faster, else
            fp32), `fp32` or `int8` (a model without a servable int8 export then answers with
            a message naming the fix).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        max_upload_mb: float = 10.0,
        default_model: str | None = None,
        precision: str = "auto",
    ) -> None:
        from food_assets.ml.inference.serving import check_precision

        if max_upload_mb <= 0:
            from food_assets.ml.errors import ConfigError

            raise ConfigError(f"max_upload_mb must be positive, not {max_upload_mb}")
        self.precision = check_precision(precision)
        self.root = catalog.data_dir(data_dir)
        self.storage = catalog.open_storage(self.root)
        self.max_upload_mb = float(max_upload_mb)
        self.load_count = 0
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self._extra: dict[str, MaterializedModel] = {}
        #: How the preselected model was chosen (`resolver.Resolved.how`).
        self.default_how = ""
        self.default_model = self._resolve_default(default_model)

    # -- models ------------------------------------------------------------------------------

    def _resolve_default(self, model: str | None) -> str | None:
        """The preselected model, by the one resolver (`food_assets.resolver`): None asks for
        the default (the champion; else, said in `default_how`, the most accurate model)."""
        from food_assets.ml.errors import UnknownModelError
        from food_assets.resolver import resolve_model

        try:
            resolved = resolve_model(model, self.root, storage=self.storage)
        except UnknownModelError:
            if model is None:  # nothing materialized yet: the page says so
                return None
            raise
        if resolved.model.name not in self.model_names():
            self._extra[resolved.model.name] = resolved.model
        self.default_how = resolved.how
        return resolved.model.name

    def _artifacts(self) -> str:
        return self.storage.location(layout.artifacts_dir(self.storage.local))

    def models(self) -> dict[str, MaterializedModel]:
        """Materialized models by name, read from the root each time (new runs show up on
        reload)."""
        found = {m.name: m for m in catalog.list_materialized(self.storage)}
        return {**found, **self._extra}

    def model_names(self) -> list[str]:
        return list(self.models())

    def get(self, name: str) -> LoadedModel:
        """The loaded model, loading it on first use only."""
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is not None:
                return loaded
            entry = self.models().get(name)
            if entry is None:
                from food_assets.ml.errors import UnknownModelError

                raise UnknownModelError(
                    f"model {name!r} is not materialized under {self._artifacts()}"
                )
            # Under the lock on purpose: two first requests must not load a 100 MB model twice.
            loaded = load_model(entry, self.precision)
            self.load_count += 1
            self._loaded[name] = loaded
            return loaded

    def describe(self, name: str | None) -> str:
        """Markdown: the model's name, the file that answers, test accuracy if known."""
        if not name:
            return ""
        entry = self.models().get(name)
        if entry is None:
            return f"Model `{name}` is no longer on disk."
        loaded = self._loaded.get(name)
        source = loaded.source if loaded else entry.best_path
        choice = getattr(loaded.predictor, "choice", None) if loaded else None
        # What answers, as the catalog entry (or the loaded predictor) records it: no file names.
        is_onnx = choice is not None if loaded else entry.onnx_path is not None
        kind = "ONNX Runtime" if is_onnx else "PyTorch bundle"
        if choice is not None:
            runtime = "OpenVINO" if getattr(choice, "backend", "") == "openvino" else "ONNX Runtime"
            kind = f"{runtime} {choice.precision}"
        label = loaded.name if loaded else name
        where = entry.storage.location(source) if entry.storage and source else source
        if entry.registry is not None:
            where = f"{entry.registry.uri} (version {entry.registry.version})"
        lines = [f"**Model:** `{label}` ({kind})", f"**Source:** `{where}`"]
        if name == self.default_model and self.default_how:
            lines.append(f"**Preselected:** {self.default_how}")  # the champion, or why not
        if choice is not None:
            lines.append(f"**Precision:** {choice.reason}")
        if kind == "PyTorch bundle" and entry.temperature is not None:
            lines.append(f"**Calibration:** {entry.temperature_note()}")
        acc = entry.accuracy
        lines.append(
            f"**Test top-1 accuracy:** {acc:.1%}" if acc is not None else
            "**Test top-1 accuracy:** unknown (materialize `evaluation_" + label + "`)"
        )  # fmt: skip
        if loaded is not None and loaded.cam_note:
            lines.append(f"_{loaded.cam_note}_")
        return "  \n".join(lines)

    # -- requests ----------------------------------------------------------------------------

    def no_model_message(self) -> str:
        return NO_MODEL_MESSAGE.format(root=self._artifacts())

    def predict(self, file: str | os.PathLike[str] | None, model_name: str | None) -> DemoResult:
        """Classify one uploaded file; never raises for a bad upload or a failing model."""
        from food_assets.ml.data.images import ImageDecodeError, open_image
        from food_assets.ml.errors import FoodAssetsError

        names = self.model_names()
        if not names:
            return DemoResult(message=self.no_model_message())
        name = model_name or self.default_model or names[0]
        if file is None:
            return DemoResult(info=self.describe(name))
        path = Path(file)
        try:
            size = path.stat().st_size
        except OSError as exc:
            return DemoResult(message=f"**Could not read the upload:** {exc.strerror or exc}.")
        if size > self.max_upload_mb * MIB:
            return DemoResult(
                info=self.describe(name),
                message=(
                    f"**File too large:** {path.name} is {size / MIB:.1f} MB; the limit is "
                    f"{self.max_upload_mb:g} MB. Upload a smaller photo."
                ),
            )
        try:
            loaded = self.get(name)
        except FoodAssetsError as exc:
            return DemoResult(message=f"**Could not load model `{name}`:** {exc}")
        try:
            # draft_size: libjpeg decodes a 12 MP phone photo at 1/4 scale when that is enough.
            image = open_image(path, draft_size=loaded.predictor.preprocess.input_size)
        except ImageDecodeError as exc:
            detail = f" ({exc.detail})" if exc.detail and exc.reason != "not an image" else ""
            return DemoResult(
                info=self.describe(name),
                message=(
                    f"**Not a usable image:** {path.name}: {exc.reason}{detail}. "
                    "Upload a JPEG, PNG, WebP, BMP, GIF or TIFF photo."
                ),
            )
        try:
            return self._classify(loaded, image, name)
        except Exception as exc:  # keep serving whatever a model does; the log has the traceback
            log.exception("prediction with %s failed", name)
            return DemoResult(
                info=self.describe(name),
                message=f"**Prediction failed:** {type(exc).__name__}: {exc}",
            )

    def _classify(self, loaded: LoadedModel, image: Image.Image, name: str) -> DemoResult:
        probs = loaded.predictor.predict_images([image])[0]
        ranked = loaded.predictor.top_k(probs, TOP_K)  # the predictor's ranking: ties by class
        top = dict(ranked)
        overlay = None
        if loaded.cam_model is not None:
            overlay = self._gradcam(loaded, image, loaded.cam_class_index[ranked[0][0]])
        return DemoResult(top=top, overlay=overlay, info=self.describe(name))

    @staticmethod
    def _gradcam(loaded: LoadedModel, image: Image.Image, target: int) -> np.ndarray:
        from food_assets.ml.data.transforms import ImagePipeline, denormalize
        from food_assets.ml.explain import compute_cams, overlay

        pre = loaded.cam_preprocess
        x = ImagePipeline(pre, train=False).from_image(image).unsqueeze(0)
        with loaded.cam_lock:
            cams = compute_cams(
                loaded.cam_model, loaded.cam_layer, x, [target], loaded.cam_reshape, batch_size=1
            )
        rgb = denormalize(x[0], pre).permute(1, 2, 0).numpy()
        heat = overlay(rgb, cams[0])
        if min(heat.shape[:2]) < OVERLAY_MIN_PX:
            import numpy as np
            from PIL import Image

            scale = OVERLAY_MIN_PX / min(heat.shape[:2])
            size = (round(heat.shape[1] * scale), round(heat.shape[0] * scale))
            heat = np.asarray(Image.fromarray(heat).resize(size, Image.Resampling.BILINEAR))
        return heat
