"""MLflow, and nothing of Dagster: the run of a model materialization and the champion rule
(`runs`), the datasets, logged models and system metrics of a run (`lineage`), the reader of
the Model Registry (`model_registry`), the pyfunc that is logged (`pyfunc`), and the redaction
of secrets from every URI shown or recorded (`redact`). ADR 0026.
"""
