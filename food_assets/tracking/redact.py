"""Credentials out of everything the project shows or records (ADR 0025).

The team setup's URIs carry passwords (`postgresql+psycopg2://mlflow:PW@db/mlflow`, an MLflow
server behind basic auth, a presigned object-store URL) and its environment carries keys
(`DAGSTER_PG_PASSWORD`, `AWS_SECRET_ACCESS_KEY`). Wherever a URI is shown (asset metadata, the
CLI's output, a failure message) it goes through `redact_uri`; free text that may quote one (an
error message) goes through `redact_text`. Only the secret part is replaced, so the value still
says which server and database it was.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

#: What a secret is replaced with.
MASK = "***"
#: Environment variables whose value is a secret as a whole.
SECRET_ENV = (
    "DAGSTER_PG_PASSWORD",
    "PGPASSWORD",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
)
#: Environment variables the project reads that hold a URI (whose password is a secret).
URI_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "FOOD_ASSETS_MLFLOW_URI",
    "FOOD_ASSETS_ARTIFACT_ROOT",
    "FOOD_ASSETS_MLFLOW_UI_URL",
    "AWS_ENDPOINT_URL",
)
#: Query parameters that carry credentials (presigned URLs, SAS tokens, DSN options).
_SECRET_PARAM = re.compile(
    r"(pass(word)?|secret|token|signature|sig|credential|api[_-]?key|access[_-]?key)", re.I
)
#: `scheme://user:password@` inside free text.
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)(?P<pw>[^@\s/]+)@")
#: A secret shorter than this is not searched for in free text (it would mask common words).
_MIN_SECRET_LEN = 4


def redact_uri(uri: str) -> str:
    """`uri` with its password and credential query parameters replaced by `***`.

    >>> redact_uri("postgresql+psycopg2://mlflow:s3cret@db:5432/mlflow?sslmode=require")
    'postgresql+psycopg2://mlflow:***@db:5432/mlflow?sslmode=require'
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return redact_text(uri)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:  # user:password (a bare user name is no secret)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{host}" if user else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(k) for k, _ in pairs):
            query = urlencode(
                [(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*"
            )
    # Replaced in place rather than rebuilt: urlunsplit turns `sqlite:////abs/path` into
    # `sqlite://abs/path`.
    if netloc != parts.netloc:
        uri = uri.replace(parts.netloc, netloc, 1)
    if query != parts.query:
        uri = uri.replace(parts.query, query, 1)
    return uri


def secrets_in_env(environ: os._Environ[str] | dict[str, str] | None = None) -> list[str]:
    """The secret values in the environment: the SECRET_ENV values and the passwords of the
    URIs in URI_ENV (longest first, so that one secret inside another is masked whole)."""
    env = os.environ if environ is None else environ
    found = {env[k] for k in SECRET_ENV if env.get(k)}
    for k in URI_ENV:
        value = env.get(k)
        if value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.add(password)
    return sorted((s for s in found if len(s) >= _MIN_SECRET_LEN), key=len, reverse=True)


def redact_text(text: str, environ: os._Environ[str] | dict[str, str] | None = None) -> str:
    """Free text (an error message, a log line) with every `scheme://user:password@` password
    and every secret value of the environment (`secrets_in_env`) replaced by `***`."""
    text = _USERINFO.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    for secret in secrets_in_env(environ):
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A log handler's filter that masks credentials in each record's text (`redact_text`):
    MLflow's own warnings quote the request URL, password included, when the tracking URI
    carries one (`http://user:pw@host`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        safe = redact_text(text)
        if safe != text:
            record.msg, record.args = safe, ()
        return True


def redact_logs(logger_name: str = "mlflow") -> None:
    """Put a `RedactingFilter` on the handlers of `logger_name` (MLflow logs through its own
    handler, not the root's), once."""
    for handler in logging.getLogger(logger_name).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
