"""Evaluation: predictions, pure metrics, temperature scaling, figures, reports, comparison.

No Dagster here. The `evaluation_<name>` assets call `evaluate_bundle` (`predict_logits` on val
and test, then `evaluate_model`); `leaderboard` calls `compare_models` then
`save_comparison`.
"""

from food_assets.ml.evaluation.calibration import apply_temperature, fit_temperature
from food_assets.ml.evaluation.compare import ComparisonResult, compare_models, save_comparison
from food_assets.ml.evaluation.evaluate import evaluate_bundle, resolve_device
from food_assets.ml.evaluation.predict import Predictions, predict_logits
from food_assets.ml.evaluation.report import EvaluationResult, check_class_maps, evaluate_model

__all__ = [
    "ComparisonResult",
    "EvaluationResult",
    "Predictions",
    "apply_temperature",
    "check_class_maps",
    "compare_models",
    "evaluate_bundle",
    "evaluate_model",
    "fit_temperature",
    "predict_logits",
    "resolve_device",
    "save_comparison",
]
