"""The Gradio page: upload a food photo, see the top-3 classes and a Grad-CAM overlay.

`build_app` wires a `DemoService` (`food_assets.demo.service`, everything that is not UI) into a
`gradio.Blocks` page and `launch` serves it (`food-assets demo` calls `launch`). Gradio is
imported inside the functions, so importing this module stays cheap for the CLI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from food_assets.demo.service import MIB, STATIC_DIR, TOP_K, DemoService, example_images

if TYPE_CHECKING:
    import gradio as gr


def _message_box(message: str) -> str:
    return f"⚠️ {message}" if message else ""


@dataclass
class _Page:
    """The page's interactive components, for wiring events to them."""

    picker: Any
    upload: Any
    label: Any
    cam: Any
    info: Any
    message: Any


def build_app(
    model: str | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    max_upload_mb: float = 10.0,
) -> gr.Blocks:
    """The demo page.

    Args:
        model: preselected model: a materialized name (`custom_cnn`) or a path to a bundle
            folder / `.onnx` file; None picks the materialized model with the best test accuracy.
        data_dir: data folder of the runs (default `FOOD_ASSETS_DATA_DIR` or `./data`).
        max_upload_mb: uploads above this size get a message instead of a prediction.

    Returns:
        The Blocks app; its `DemoService` is at `app.demo_service`. The `predict` API endpoint
        takes `(file, model_name)` and returns `(top-3 label, overlay, model info, message)`.

    Raises:
        UnknownModelError: `model` is neither materialized nor an existing path.
    """
    # No usage statistics leave the machine (the build machines have no internet anyway).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    service = DemoService(data_dir, max_upload_mb=max_upload_mb, default_model=model)
    # Examples live inside the installed package, outside Gradio's default allowed folders.
    gr.set_static_paths([STATIC_DIR])

    with gr.Blocks(title="food_assets demo", analytics_enabled=False) as app:
        gr.Markdown(
            "# food_assets: what food is this?\n"
            "Upload a photo (or pick an example): the model answers with its top-3 classes, "
            "and Grad-CAM shows where it looked for the top one."
        )
        page = _layout(service, max_upload_mb)
        _wire(app, service, page)
    app.demo_service = service  # type: ignore[attr-defined]  # for tests and the CLI
    return app


def _layout(service: DemoService, max_upload_mb: float) -> _Page:
    """The two columns: picker, upload and examples; message, classes, overlay, model info."""
    import gradio as gr

    names = service.model_names()
    with gr.Row():
        with gr.Column(scale=1):
            picker = gr.Dropdown(
                choices=names,
                value=service.default_model,
                label="Model (materialized)",
                interactive=bool(names),
                elem_id="model-picker",
            )
            upload = gr.File(
                label=f"Photo (up to {max_upload_mb:g} MB)",
                type="filepath",
                elem_id="photo-upload",
            )
            examples = example_images()
            if examples:
                gr.Examples(
                    examples=[[str(p)] for p in examples],
                    inputs=[upload],
                    label="Examples",
                )
        with gr.Column(scale=1):
            message = gr.Markdown(
                "" if names else service.no_model_message(), elem_id="demo-message"
            )
            label = gr.Label(num_top_classes=TOP_K, label="Top-3 classes", elem_id="top3")
            cam = gr.Image(
                label="Grad-CAM (top class)",
                type="numpy",
                format="png",
                interactive=False,
                elem_id="gradcam",
            )
            info = gr.Markdown(service.describe(service.default_model), elem_id="model-info")
    return _Page(picker=picker, upload=upload, label=label, cam=cam, info=info, message=message)


def _wire(app: gr.Blocks, service: DemoService, page: _Page) -> None:
    """Predict on upload and on a model change (the `predict` API); refresh models on load."""
    import gradio as gr

    def on_predict(file: str | None, model_name: str | None):
        result = service.predict(file, model_name)
        if result.message and service.model_names():
            # A toast as well as the box: the box may be scrolled out of view on a phone.
            gr.Warning(result.message.replace("**", ""), duration=8, title="Cannot classify")
        return (
            result.top or None,
            result.overlay,
            result.info,
            _message_box(result.message),
        )

    def on_load():
        names = service.model_names()
        value = service.default_model if service.default_model in names else None
        value = value or (names[0] if names else None)
        return (
            gr.Dropdown(choices=names, value=value, interactive=bool(names)),
            service.describe(value),
            "" if names else service.no_model_message(),
        )

    inputs = [page.upload, page.picker]
    outputs = [page.label, page.cam, page.info, page.message]
    page.upload.change(on_predict, inputs=inputs, outputs=outputs, api_name="predict")
    page.picker.change(on_predict, inputs=inputs, outputs=outputs, api_visibility="private")
    app.load(on_load, outputs=[page.picker, page.info, page.message], api_visibility="private")


def launch(
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    max_upload_mb: float = 10.0,
) -> None:
    """Serve the demo until interrupted (what `food-assets demo` runs).

    Args:
        model: preselected model name or bundle/ONNX path; None: the best evaluated one.
        host: interface to bind; `0.0.0.0` exposes it on the network.
        port: TCP port.
        share: ask Gradio for a public `*.gradio.live` link (needs internet).
        max_upload_mb: uploads above this size are refused with a message.
    """
    app = build_app(model, max_upload_mb=max_upload_mb)
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=host,
        server_port=port,
        share=share,
        # Gradio itself refuses anything far above the limit before it reaches the disk; files
        # just above it still get the service's own, clearer message.
        max_file_size=int(max(2 * max_upload_mb, max_upload_mb + 1) * MIB),
        allowed_paths=[str(STATIC_DIR)],
        ssr_mode=False,
        show_error=True,
    )
