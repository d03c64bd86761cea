"""An S3 API on loopback for tests: moto's standalone server, as s3fs's own tests use it.

`moto_s3()` starts `moto.server.ThreadedMotoServer` on 127.0.0.1 with a free port (port 0), and
stops it on exit. `s3_env(monkeypatch, endpoint)` points every S3 client of the process
(botocore's `AWS_ENDPOINT_URL`, read by s3fs through aiobotocore) at it with dummy credentials,
and creates a fresh bucket. Nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """The endpoint URL of a moto S3 server on 127.0.0.1, for the duration of the block."""
    from moto.server import ThreadedMotoServer

    # werkzeug logs one line per request on stderr; a test run does not need them.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> str:
    """Point S3 clients at `endpoint` with dummy credentials; returns a new, empty bucket's URL
    (`s3://<bucket>`)."""
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    # s3fs reuses filesystem instances across tests; one made for another endpoint must not be.
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"food-assets-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(bucket)
    return f"s3://{bucket}"
