"""Where models registered before ADR 0026 find their pyfunc class: MLflow pickled
`FoodClassifier` by reference to this module, so it stays importable here; the code lives in
`food_assets.tracking.pyfunc`, which the tracking side logs."""

from food_assets.tracking.pyfunc import FoodClassifier as FoodClassifier  # re-exported

__all__ = ["FoodClassifier"]
