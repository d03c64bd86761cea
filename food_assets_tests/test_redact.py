"""`food_assets.tracking.redact`: only the secret part of a URI or message is masked (ADR 0025)."""

from __future__ import annotations

import pytest

from food_assets.tracking.redact import redact_text, redact_uri, secrets_in_env


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql+psycopg2://mlflow:s3cret@db:5432/mlflow?sslmode=require",
         "postgresql+psycopg2://mlflow:***@db:5432/mlflow?sslmode=require"),
        # A password with URL-special characters, quoted as a URI must quote it.
        ("postgresql://u:p%40ss%3Aw@db/x", "postgresql://u:***@db/x"),
        # No password: nothing to hide (a bare user name is not a secret).
        ("postgresql://mlflow@db:5432/mlflow", "postgresql://mlflow@db:5432/mlflow"),
        ("http://mlflow.internal:5000", "http://mlflow.internal:5000"),
        # sqlite's empty host survives (urlunsplit would drop a slash).
        ("sqlite:////srv/data/mlflow/mlflow.db", "sqlite:////srv/data/mlflow/mlflow.db"),
        # Presigned URLs: the signature and token, not the other parameters.
        ("https://s3/b/k?X-Amz-Signature=abc&X-Amz-Security-Token=t0k&X-Amz-Expires=60",
         "https://s3/b/k?X-Amz-Signature=***&X-Amz-Security-Token=***&X-Amz-Expires=60"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
    ],
)  # fmt: skip
def test_redact_uri_masks_the_password_and_credential_parameters_only(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_redact_text_masks_uris_and_the_environments_secrets() -> None:
    """Breakage tried: secrets searched shortest first (a password containing another secret
    is then left half visible: `***rd-long`)."""
    env = {
        "DAGSTER_PG_PASSWORD": "pass",
        "FOOD_ASSETS_MLFLOW_URI": "postgresql://u:pass-word-long@db/m",
        "AWS_SECRET_ACCESS_KEY": "AKxyz123",
        "AWS_ACCESS_KEY_ID": "public-id",  # an id, not a secret
        "PGPASSWORD": "abc",  # too short to search in free text
    }
    assert secrets_in_env(env) == ["pass-word-long", "AKxyz123", "pass"]
    text = (
        "could not connect to postgresql://u:pass-word-long@db/m (pass-word-long); "
        "key AKxyz123 for public-id; abc"
    )
    assert redact_text(text, env) == (
        "could not connect to postgresql://u:***@db/m (***); key *** for public-id; abc"
    )
    assert redact_text("mysql://root:hunter2@h/db failed", {}) == "mysql://root:***@h/db failed"


def test_mlflow_log_lines_are_redacted_by_the_filter(capfd: pytest.CaptureFixture[str]) -> None:
    """MLflow logs through its own stderr handler; `redact_logs("mlflow")` masks a password its
    warnings quote (the request URL of a tracking server), %-style arguments included, and is
    put on once however often it is called. Breakage tried: the filter on the `mlflow` logger
    instead of its handlers (a child logger's record passes unfiltered: fails)."""
    import logging

    import mlflow  # noqa: F401  (sets up MLflow's handler)

    from food_assets.tracking.redact import RedactingFilter, redact_logs

    redact_logs("mlflow")
    logging.getLogger("mlflow.system_metrics.system_metrics_monitor").warning(
        "Failed to get mlflow run: API request to %s failed", "http://food:s3cret-pw@h:5000/api"
    )
    err = capfd.readouterr().err
    assert "http://food:***@h:5000/api" in err and "s3cret-pw" not in err
    redact_logs("mlflow")
    handlers = logging.getLogger("mlflow").handlers
    assert handlers and all(
        sum(isinstance(f, RedactingFilter) for f in h.filters) == 1 for h in handlers
    )
