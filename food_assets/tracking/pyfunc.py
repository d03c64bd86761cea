"""The registered MLflow model: a pyfunc that takes image bytes and answers labels.

`mlflow.pyfunc.load_model("models:/food_assets.<name>@champion")` and `mlflow models serve` then
work with what an application has (the bytes of a photo), not with pre-normalized tensors: the
input is a DataFrame column `image` of bytes (base64 in `mlflow models serve`'s JSON, which
MLflow decodes for a `binary` column), the output one row per image with `label`,
`probability`, `top_k` (a list of {label, probability}) and `error` (None, or why the image was
not read: the other rows are still answered). `k` is a parameter (default 5).

It wraps the same predictor as `predict` and `food-assets serve` (`load_predictor` on the
bundle logged beside it), so the three answer alike.
"""

from __future__ import annotations

import warnings
from typing import Any

with warnings.catch_warnings():
    # MLflow 3 warns, on import, about `Any` hints in its own classes; the signature below is
    # what validates this model's input.
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred.*")
    import mlflow.pyfunc

BUNDLE_ARTIFACT = "bundle"
DEFAULT_K = 5


def signature() -> Any:
    """Input `image` (binary), parameter `k` (long), output label / probability / error."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema(
            [
                ColSpec("string", "label", required=False),
                ColSpec("double", "probability", required=False),
                ColSpec("string", "error", required=False),
            ]
        ),
        params=ParamSchema([ParamSpec("k", "long", DEFAULT_K)]),
    )


class FoodClassifier(mlflow.pyfunc.PythonModel):
    """Image bytes -> top-k food classes, by the model's bundle (`artifacts["bundle"]`)."""

    def load_context(self, context):  # noqa: ANN001 (MLflow's own types)
        from food_assets.ml.inference.predictor import load_predictor

        self.predictor = load_predictor(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input, params=None):  # noqa: ANN001
        import numpy as np
        import pandas as pd
        import torch

        from food_assets.ml.data.images import ImageDecodeError

        if "image" not in getattr(model_input, "columns", ()):
            raise ValueError("the input needs a column named 'image' holding image bytes")
        n_classes = len(self.predictor.class_names)
        k = max(1, min(int((params or {}).get("k", DEFAULT_K)), n_classes))
        rows: list[dict[str, Any]] = []
        tensors, at = [], []
        for i, data in enumerate(model_input["image"]):
            rows.append({"label": None, "probability": None, "top_k": [], "error": None})
            try:
                if isinstance(data, str):  # a client that sent base64 text MLflow left as is
                    import base64

                    data = base64.b64decode(data)
                tensors.append(self.predictor.tensor_from_bytes(bytes(data)))
                at.append(i)
            except ImageDecodeError as exc:
                rows[i]["error"] = f"{exc.reason} ({exc.detail})" if exc.detail else exc.reason
            except (TypeError, ValueError) as exc:
                rows[i]["error"] = f"not image bytes ({type(exc).__name__})"
        probs = self.predictor.predict_tensor(torch.stack(tensors)) if tensors else np.zeros(0)
        for i, p in zip(at, probs, strict=True):
            top = self.predictor.top_k(p, k)
            rows[i].update(
                label=top[0][0],
                probability=top[0][1],
                top_k=[{"label": c, "probability": q} for c, q in top],
            )
        return pd.DataFrame(rows, columns=["label", "probability", "top_k", "error"])


def log_model(bundle_dir: str, pip_requirements: list[str]) -> Any:
    """Log the pyfunc (with the bundle as its artifact) in the active run; MLflow's ModelInfo."""
    with warnings.catch_warnings():
        # No input example: MLflow would load the network once more to check it; the signature
        # says what the input is, and the tests call the logged model for real.
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=FoodClassifier(),
            artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
            signature=signature(),
            pip_requirements=pip_requirements,
        )
