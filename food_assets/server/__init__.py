"""`food-assets serve`: an HTTP model server (FastAPI on uvicorn, dynamic batching, health,
readiness, Prometheus metrics, hot swap of the `champion`), and the MLflow pyfunc of a
registered model (`food_assets.tracking.pyfunc`). Dagster-free; MLflow only through
`food_assets.tracking.model_registry` and in `pyfunc`. See docs/serving.md and ADR 0022.
"""
