"""The server and the registry: `champion` hot swap under load, the pyfunc through
`mlflow.pyfunc.load_model` and `mlflow models serve`. A real SQLite MLflow store with two real
versions of `food_assets.custom_cnn` registered the way `model_<name>` registers them.

Each test's docstring names the breakage tried on purpose (and seen failing) when it was
written.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest

from food_assets.server.app import ServerSettings
from food_assets.server.server import Server, bind
from food_assets_tests.served import make_bundle, png_bytes, register_bundle

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
V1 = ["apple_pie", "pizza", "sushi"]
V2 = ["ramen", "tacos", "waffles"]  # other labels: an answer says which version gave it
NAME = "food_assets.custom_cnn"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    """Versions 1 (V1 labels) and 2 (V2 labels) in `<data>/mlflow/mlflow.db`; champion -> 1."""
    data = tmp_path_factory.mktemp("registry") / "data"
    uri = f"sqlite:///{data / 'mlflow' / 'mlflow.db'}"
    (data / "mlflow").mkdir(parents=True)
    bundles = {
        "1": make_bundle(data.parent / "b1", V1, seed=1),
        "2": make_bundle(data.parent / "b2", V2, seed=2),
    }
    versions = [register_bundle(bundles[v], uri) for v in ("1", "2")]
    assert versions == ["1", "2"]
    client = mlflow.MlflowClient(uri)
    client.set_registered_model_alias(NAME, "champion", "1")
    return {"data": data, "uri": uri, "client": client, "bundles": bundles}


@pytest.fixture
def champion_1(registry, monkeypatch):
    monkeypatch.delenv("FOOD_ASSETS_MLFLOW_URI", raising=False)
    registry["client"].set_registered_model_alias(NAME, "champion", "1")
    yield registry
    registry["client"].set_registered_model_alias(NAME, "champion", "1")


def test_champion_swaps_under_concurrent_load_with_no_failed_request(champion_1):
    """4 clients post for the whole test; the alias moves from version 1 to 2 half-way. Every
    answer is a 200 whose labels are its version's, each client sees 1s then 2s (never back),
    and both versions answered. Breakage tried: the watcher emptying the slot while it loads
    the new version (`/predict` answers 503 not_ready meanwhile: fails). Not caught: a batch
    that straddles the swap run by the newest model only (both versions have 3 classes, and
    such batches are rare at this load)."""
    reg = champion_1
    settings = ServerSettings(data=reg["data"], ref="champion", poll_s=0.2, max_wait_ms=5)
    answers: list[list[tuple[int, str | None, str | None]]] = [[] for _ in range(4)]
    stop = threading.Event()

    def client(i: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            n = 0
            while not stop.is_set():
                got = c.post(
                    "/predict",
                    content=png_bytes(i * 1000 + n),
                    headers={"content-type": "image/png"},
                )
                body = got.json()
                answers[i].append((got.status_code, body.get("version"), body.get("label")))
                n += 1

    with Server(settings) as srv:
        srv.wait_ready()
        assert srv.state.slot.current.version == "1"
        threads = [threading.Thread(target=client, args=(i, srv.url)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        reg["client"].set_registered_model_alias(NAME, "champion", "2")
        deadline = time.monotonic() + 60
        while getattr(srv.state.slot.current, "version", None) != "2":
            assert time.monotonic() < deadline, "the new champion was never swapped in"
            time.sleep(0.05)
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(60)
        metrics = httpx.get(f"{srv.url}/metrics").text
    flat = [a for per in answers for a in per]
    assert flat and all(status == 200 for status, _, _ in flat), {a[0] for a in flat}
    assert {v for _, v, _ in flat} == {"1", "2"}
    for _, version, label in flat:
        assert label in (V1 if version == "1" else V2), (version, label)
    for per in answers:
        seen = [v for _, v, _ in per]
        assert seen == sorted(seen), "a client got version 1 after version 2"
    assert "food_assets_model_loads_total 2.0" in metrics


def test_pyfunc_loads_from_the_registry_and_answers_like_the_predictor(champion_1):
    """`mlflow.pyfunc.load_model("models:/food_assets.custom_cnn@champion")` on a DataFrame of
    image bytes: the predictor's top-1 and probability per image, k honoured, and a bad image
    gets its row's `error` while the others are answered. Breakage tried: `predict` zipping
    probabilities with every row instead of the readable ones (the row after the bad image
    gets the bad one's answer: fails)."""
    from food_assets.ml.inference.predictor import load_predictor

    reg = champion_1
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(reg["uri"])
    try:
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    finally:
        mlflow.set_tracking_uri(before)
    images = [png_bytes(1), b"not an image", png_bytes(2), png_bytes(3)]
    out = model.predict(pd.DataFrame({"image": images}), params={"k": 2})
    assert list(out.columns) == ["label", "probability", "top_k", "error"]
    predictor = load_predictor(reg["bundles"]["1"])
    for i, data in enumerate(images):
        if i == 1:
            assert out["error"][i] == "not an image (no image decoder recognises it)"
            assert out["label"][i] is None
            continue
        probs = predictor.predict_tensor(predictor.tensor_from_bytes(data)[None])[0]
        want = predictor.top_k(probs, 2)
        assert out["label"][i] == want[0][0] and out["error"][i] is None
        assert out["probability"][i] == pytest.approx(want[0][1], rel=1e-5)
        assert [t["label"] for t in out["top_k"][i]] == [c for c, _ in want]


def test_mlflow_models_serve_answers_image_bytes(champion_1, tmp_path):
    """`mlflow models serve --env-manager local` of the champion on loopback: base64 image bytes
    in `dataframe_split`, labels out. Breakage tried: the old logged model (MLflow's PyTorch
    flavour: a 400 about the tensor input)."""
    reg = champion_1
    with bind("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]
    env = os.environ | {
        "MLFLOW_TRACKING_URI": reg["uri"],
        "PYTHONPATH": str(REPO),
        # MLflow starts its scoring server with the `uvicorn` script of this environment.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion"]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            try:
                if httpx.get(f"{url}/ping").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        payload = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[base64.b64encode(png_bytes(1)).decode()], ["bm90IGFuIGltYWdl"]],
            },
            "params": {"k": 3},
        }
        got = httpx.post(f"{url}/invocations", json=payload, timeout=60)
        assert got.status_code == 200, got.text
        rows = got.json()["predictions"]
        assert rows[0]["label"] in V1 and len(rows[0]["top_k"]) == 3 and rows[0]["error"] is None
        assert rows[1]["error"].startswith("not an image")
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)  # its own session: mlflow and the uvicorn it runs
        proc.wait(30)
        proc.stderr.close()
