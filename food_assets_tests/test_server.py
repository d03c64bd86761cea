"""`food-assets serve` (food_assets.server): the real server on loopback, a real HTTP client.

Each test's docstring names the breakage tried on purpose (and seen failing) when it was
written.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from food_assets.ml.data.transforms import Preprocess
from food_assets.server.app import ServerSettings
from food_assets.server.server import Server, check_bind, is_loopback
from food_assets_tests.served import blank_png, png_bytes
from food_assets_tests.tiny_onnx import tiny_onnx

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("apple_pie", "pizza", "sushi", "ramen")
LIMIT = 64 * 1024  # bytes: the body limit of the fast server below
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ONNX classifier (logits = channel means @ W): red images rank apple_pie first."""
    w = np.array([[3, 0, 0, 1], [0, 3, 0, 1], [0, 0, 3, 1]], dtype=np.float32)
    root = tmp_path_factory.mktemp("served")
    return tiny_onnx(
        root / "model.onnx", w, class_names=CLASSES, preprocess=Preprocess(input_size=32)
    )


def _settings(model: Path, **kw) -> ServerSettings:
    base = dict(
        data=model.parent,
        ref=str(model),
        max_body_bytes=LIMIT,
        max_pixels=MAX_PIXELS,
        max_k=3,
        max_wait_ms=2.0,
    )
    return ServerSettings(**(base | kw))


@pytest.fixture(scope="module")
def server(onnx_model: Path):
    with Server(_settings(onnx_model)) as srv:
        srv.wait_ready()
        yield srv


@pytest.fixture
def client(server: Server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _predict(client: httpx.Client, body: bytes, ctype: str = "image/png", q: str = ""):
    return client.post(f"/predict{q}", content=body, headers={"content-type": ctype})


def test_predict_raw_and_multipart_answer_the_same(client):
    """Raw body and multipart field `image` give the model's top-k (k per request), with the
    model, backend and precision. Breakage tried: `_answer` built from `probs` before the
    temperature-free sort (`top_k` unsorted: the red image's first label is not apple_pie)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 40), (250, 10, 10)).save(buf, "PNG")
    red = buf.getvalue()
    raw = _predict(client, red, q="?k=2")
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert body["label"] == "apple_pie" and [t["label"] for t in body["top_k"]][0] == "apple_pie"
    assert len(body["top_k"]) == 2
    assert body["top_k"][0]["probability"] >= body["top_k"][1]["probability"]
    assert (body["model"], body["backend"], body["precision"]) == ("tiny", "onnxruntime", "fp32")
    multi = client.post("/predict?k=2", files={"image": ("red.png", red, "image/png")})
    assert multi.status_code == 200, multi.text
    assert multi.json()["top_k"] == body["top_k"]
    octet = _predict(client, red, "application/octet-stream")
    assert octet.status_code == 200 and len(octet.json()["top_k"]) == 3  # default 5, capped at 3


BAD_REQUESTS = {
    "not an image": (b"hello, I am text" * 10, "image/png", "", 400, "not_an_image"),
    "truncated": (png_bytes(0)[:80], "image/png", "", 400, "corrupt_image"),
    "zero-size": (b"", "image/png", "", 400, "empty_body"),
    "decompression bomb": (blank_png((1001, 1000)), "image/png", "", 413, "too_many_pixels"),
    "over the size limit": (b"\xff" * (LIMIT + 1), "image/jpeg", "", 413, "too_large"),
    "wrong content type": (png_bytes(0), "text/plain", "", 415, "unsupported_media_type"),
    "no content type": (png_bytes(0), "", "", 415, "unsupported_media_type"),
    "k = 0": (png_bytes(0), "image/png", "?k=0", 400, "bad_k"),
    "k over max": (png_bytes(0), "image/png", "?k=4", 400, "bad_k"),
    "k not a number": (png_bytes(0), "image/png", "?k=two", 400, "bad_k"),
}


@pytest.mark.parametrize("kind", list(BAD_REQUESTS))
def test_every_bad_request_is_a_4xx_json_error_and_the_server_keeps_serving(client, kind):
    """Each client mistake: its 4xx, a JSON error naming it, no traceback; then a good request
    still answers. Breakage tried: `_decode` without its `ImageDecodeError` branch (500s),
    `read_body` without the size cap (the 64 KiB + 1 body reaches the decoder: 400, not 413),
    `parse_k` with `<` for `<=` (k = max refused: the boundary test below fails)."""
    body, ctype, q, status, code = BAD_REQUESTS[kind]
    headers = {"content-type": ctype} if ctype else {}
    got = client.post(f"/predict{q}", content=body, headers=headers)
    assert got.status_code == status, got.text
    assert got.json()["error"]["code"] == code
    assert "Traceback" not in got.text and len(got.json()["error"]["message"]) < 300
    assert _predict(client, png_bytes(1)).status_code == 200


def test_the_limits_take_their_boundaries(client):
    """k = max_k, an image of exactly `max_pixels` and a body of exactly the limit are accepted
    (the last one reaches the decoder: not an image). Breakage tried: `w * h >= max_pixels` in
    open_image's check and `size >= limit` in `read_body` (each fails one line)."""
    assert _predict(client, png_bytes(2), q="?k=3").status_code == 200
    assert _predict(client, blank_png((1000, 1000))).status_code == 200
    exact = _predict(client, b"\xff" * LIMIT, "image/jpeg")
    assert (exact.status_code, exact.json()["error"]["code"]) == (400, "not_an_image")


def test_a_streamed_body_over_the_limit_is_refused_without_content_length(client):
    """A chunked upload (no Content-Length) is cut off at the limit while it streams. Breakage
    tried: checking only the Content-Length header (the chunked body is read whole: 400)."""

    def chunks():
        for _ in range(LIMIT // 1024 + 2):
            yield b"\x00" * 1024

    got = client.post("/predict", content=chunks(), headers={"content-type": "image/png"})
    assert got.status_code == 413 and got.json()["error"]["code"] == "too_large"


def test_multipart_without_the_image_field(client):
    """Breakage tried: reading the first file field whatever its name (200 instead of 400)."""
    got = client.post("/predict", files={"photo": ("x.png", png_bytes(0), "image/png")})
    assert got.status_code == 400 and got.json()["error"]["code"] == "missing_field"


def test_health_ready_metrics_and_openapi(client):
    """Breakage tried: `/ready` answering 200 with no model (see the readiness test) and the
    metrics middleware skipping error responses (no 415 sample)."""
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["ready"] is True and ready["model"] == "tiny"
    _predict(client, png_bytes(0), "text/plain")
    text = client.get("/metrics").text
    assert 'food_assets_requests_total{path="/predict",status="415"}' in text
    assert "food_assets_batch_size_bucket" in text
    assert 'food_assets_model_info{backend="onnxruntime",model="tiny"' in text
    spec = client.get("/openapi.json").json()
    assert "multipart/form-data" in spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200
    assert client.get("/nowhere").json()["error"]["code"] == "not_found"


def test_requests_arriving_together_are_batched_and_answered_alike(onnx_model):
    """8 concurrent requests with a 300 ms wait run as one batch of 8 (the batch histogram's
    sum), and each answer equals the one-at-a-time answer. Breakage tried: `max_batch` ignored
    by the collector (stops at the first item: 8 batches of 1), and answers zipped in reverse."""
    images = [png_bytes(i) for i in range(8)]
    with Server(_settings(onnx_model, max_batch=8, max_wait_ms=300)) as srv:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            with cf.ThreadPoolExecutor(8) as pool:
                together = list(pool.map(lambda b: _predict(c, b).json(), images))
            text = c.get("/metrics").text
        single = [srv.state.slot.current.predictor.predict_images([_decode(b)])[0] for b in images]
    counts = _metric(text, "food_assets_batch_size_count")
    assert _metric(text, "food_assets_batch_size_sum") == 8 and counts <= 2
    for got, probs in zip(together, single, strict=True):
        assert got["label"] == CLASSES[int(np.argmax(probs))]
        assert got["probability"] == pytest.approx(float(probs.max()), rel=1e-5)


def _decode(body: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(body)).convert("RGB")


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


def test_ready_is_503_until_the_model_is_loaded(onnx_model, monkeypatch):
    """/ready says 503 (and /predict 503 not_ready) while the model loads, 200 after. Breakage
    tried: loading in the lifespan before `yield` (the server does not answer until loaded:
    the first /ready never sees 503)."""
    from food_assets.server import app as app_module

    gate = threading.Event()
    real = app_module.load_served

    def slow_load(*args, **kwargs):
        gate.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(app_module, "load_served", slow_load)
    with Server(_settings(onnx_model)) as srv, httpx.Client(base_url=srv.url) as c:
        waiting = c.get("/ready")
        assert waiting.status_code == 503 and waiting.json()["ready"] is False
        early = _predict(c, png_bytes(0))
        assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
        assert c.get("/health").status_code == 200
        gate.set()
        srv.wait_ready()
        assert c.get("/ready").status_code == 200


def test_a_model_that_does_not_load_stops_the_server(tmp_path):
    """A corrupt .onnx: the server says why on /ready until it stops, and `fatal` holds the
    reason. Breakage tried: `load_initial` without `on_fatal` (the server keeps running,
    never ready)."""
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not onnx")
    srv = Server(_settings(bad)).start()
    srv._thread.join(20)
    assert not srv._thread.is_alive() and srv.fatal and "onnx" in srv.fatal.lower()


# -- auth past loopback ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "token", "unsafe", "ok"),
    [
        ("127.0.0.1", None, False, True),
        ("::1", None, False, True),
        ("localhost", None, False, True),
        ("0.0.0.0", None, False, False),
        ("192.168.1.5", None, False, False),
        ("my-host.lan", None, False, False),
        ("0.0.0.0", "s3cret", False, True),
        ("0.0.0.0", None, True, True),
    ],
)
def test_binding_past_loopback_needs_a_token_or_the_unsafe_flag(host, token, unsafe, ok):
    """Breakage tried: `is_loopback` true for 0.0.0.0 (`is_unspecified` mixed in: fails row 4)
    and for any host name (fails row 6)."""
    from food_assets.ml.errors import ConfigError

    assert is_loopback(host) == (host in ("127.0.0.1", "::1", "localhost"))
    if ok:
        check_bind(host, token, unsafe)
    else:
        with pytest.raises(ConfigError, match="token"):
            check_bind(host, token, unsafe)


def test_a_server_on_all_interfaces_wants_the_bearer_token(onnx_model):
    """Bound to 0.0.0.0 (in this process; talked to via 127.0.0.1): /predict, /metrics and the
    docs need `Authorization: Bearer <token>`; the probes stay open. Breakage tried: comparing
    only the token (any scheme accepted: the `Basic` line fails), and no OPEN_PATHS (the
    probes answer 401)."""
    token = "t0ken-for-tests"
    with Server(_settings(onnx_model, token=token), host="0.0.0.0") as srv:
        srv.wait_ready()
        url = f"http://127.0.0.1:{srv.port}"
        with httpx.Client(base_url=url, timeout=30) as c:
            assert _predict(c, png_bytes(0)).status_code == 401
            for header in (f"Bearer {token}x", f"Basic {token}", token):
                got = c.post("/predict", content=png_bytes(0), headers={"authorization": header})
                assert got.status_code == 401, header
            assert c.get("/metrics").status_code == 401
            assert c.get("/openapi.json").status_code == 401
            assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200
            good = c.post(
                "/predict",
                content=png_bytes(0),
                headers={"authorization": f"Bearer {token}", "content-type": "image/png"},
            )
            assert good.status_code == 200, good.text


def test_the_cli_refuses_a_public_bind_without_a_token(onnx_model, monkeypatch):
    """One `error:` line and exit code 2, nothing bound. Breakage tried: `check_bind` called
    after the server started (it listens first)."""
    from typer.testing import CliRunner

    from food_assets.cli import app

    monkeypatch.delenv("FOOD_ASSETS_SERVE_TOKEN", raising=False)
    got = CliRunner().invoke(app, ["serve", "--model", str(onnx_model), "--host", "0.0.0.0"])
    assert got.exit_code == 2
    assert got.output.strip().startswith("error:") and "--unsafe-no-auth" in got.output
    assert "Traceback" not in got.output


# -- a real process: graceful shutdown -------------------------------------------------------------


def _spawn(args: list[str], data: Path) -> tuple[subprocess.Popen, str]:
    env = os.environ | {"PYTHONPATH": str(REPO), "FOOD_ASSETS_DATA_DIR": str(data)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "food_assets.cli", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    seen = []
    while not (line := proc.stdout.readline()).startswith("listening on http://127.0.0.1:"):
        seen.append(line)
        assert line and len(seen) < 50, "".join(seen)
    url = line.split()[2]
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/ready").status_code != 200:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    return proc, url


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight(onnx_model, tmp_path):
    """`food-assets serve` in its own process: a request waiting in the batcher (1 s wait)
    when SIGTERM arrives is still answered 200, the process exits, and the port is closed.
    Breakage tried: `timeout_graceful_shutdown=0` (the request is cut: a transport error)."""
    proc, url = _spawn(["--model", str(onnx_model), "--max-wait-ms", "1000"], tmp_path)
    try:
        with cf.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                httpx.post,
                f"{url}/predict",
                content=png_bytes(0),
                headers={"content-type": "image/png"},
                timeout=30,
            )
            time.sleep(0.4)
            proc.send_signal(signal.SIGTERM)
            answer = pending.result()
        assert answer.status_code == 200 and answer.json()["model"] == "tiny"
        # uvicorn re-raises the signal it caught once it has shut down, so the exit status
        # says SIGTERM ended it (what an orchestrator expects), after the request was answered.
        assert proc.wait(30) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
