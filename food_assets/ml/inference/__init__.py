"""Prediction from exported (`.onnx`) or bundled (`model.safetensors` + `card.json`) models."""

from food_assets.ml.inference.predictor import (
    OnnxPredictor,
    PredictionResult,
    Predictor,
    TorchPredictor,
    iter_image_files,
    load_predictor,
    softmax,
)

__all__ = [
    "OnnxPredictor",
    "PredictionResult",
    "Predictor",
    "TorchPredictor",
    "iter_image_files",
    "load_predictor",
    "softmax",
]
