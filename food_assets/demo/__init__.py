"""The Gradio demo: upload a food photo, see the top-3 classes and a Grad-CAM overlay.

- `service`: `DemoService`, everything that is not UI (model listing, one load per model,
  predictions, Grad-CAM overlays, messages for bad uploads); no Gradio.
- `page`: `build_app`, the `gradio.Blocks` page on a `DemoService`, and `launch`, which serves
  it (`food-assets demo` calls `launch`).

Heavy imports (gradio, torch, onnxruntime) happen inside functions, so importing this package
stays cheap for the CLI.
"""

from food_assets.demo.page import build_app, launch
from food_assets.demo.service import (
    MIB,
    NO_MODEL_MESSAGE,
    OVERLAY_MIN_PX,
    STATIC_DIR,
    TOP_K,
    DemoResult,
    DemoService,
    LoadedModel,
    example_images,
    load_model,
)

__all__ = [
    "MIB",
    "NO_MODEL_MESSAGE",
    "OVERLAY_MIN_PX",
    "STATIC_DIR",
    "TOP_K",
    "DemoResult",
    "DemoService",
    "LoadedModel",
    "build_app",
    "example_images",
    "launch",
    "load_model",
]
