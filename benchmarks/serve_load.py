"""Load test of `food-assets serve` against `mlflow models serve` of the same registered model and
against the in-process predictor at the server's batch size (the limit), in one run.

Everything happens in a temporary data folder: an untrained registry model (`--model`, default
efficientnet_lite0 at 224 px, 101 classes; latency does not depend on the weights' values) is
saved as a bundle, logged as the project's pyfunc and registered as `food_assets.<model>` with
the `champion` alias in a SQLite MLflow store, exactly as `model_<name>` and the leaderboard do.
The clients send real JPEGs (`--image-size`, Food-101-like 512x384 noise).

1. In process (the limit): `tensor_from_bytes` + `predict_tensor` on batches of `--max-batch`
   images, one batch after another: decode, preprocess and the model, no HTTP.
2. `food-assets serve --model champion --max-batch B --max-wait-ms W` in a subprocess on a free
   127.0.0.1 port; `--clients` threads each post raw JPEG bodies, `--requests` in all.
3. `mlflow models serve -m models:/food_assets.<model>@champion --env-manager local`: the same
   clients post one image each as base64 in `dataframe_split` (MLflow's JSON API).
4. With `--litserve` (needs `pip install litserve`): a LitServe server over the same predictor,
   `max_batch_size=B`, `batch_timeout=W`, base64 JSON bodies (LitServe's JSON API).

Prints throughput (images/s), p50/p99 latency and errors per target and the ratios; the targets
of issue 25 on 2 cores: food-assets serve >= 0.8x the in-process limit and >= 2x `mlflow models
serve`, zero errors. Bounded: `--requests` per target, every wait capped by `--timeout`; loopback
only; the servers are stopped and the folder removed at the end. Clients share the CPU with the
server: on 2 cores, their own cost is part of what is measured, the same for every target.

    .venv/bin/python benchmarks/serve_load.py
    .venv/bin/python benchmarks/serve_load.py --clients 8 --requests 400 --litserve
    .venv/bin/python benchmarks/serve_load.py --model custom_cnn --requests 40 --quick
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def jpegs(n: int, size: tuple[int, int]) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def register(data: Path, model: str) -> Path:
    """An untrained `model` bundle, logged and registered as the champion; the bundle."""
    import mlflow
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.` from a script
    from benchmarks.synthetic_food101 import FOOD101_CLASSES
    from food_assets.ml.models.bundle import ModelCard, save_bundle
    from food_assets.ml.models.registry import create_model, get_model_spec
    from food_assets.tracking import model_registry
    from food_assets.tracking import runs as tracking

    torch.manual_seed(0)
    net = create_model(model, num_classes=len(FOOD101_CLASSES), weights="none").eval()
    card = ModelCard(model, list(FOOD101_CLASSES), get_model_spec(model).preprocess())
    bundle = save_bundle(data / "bundle", net, card)
    store = data / "mlflow"
    store.mkdir(parents=True)
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.create_experiment("serve_load", artifact_location=(store / "artifacts").as_uri())
    mlflow.set_experiment("serve_load")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(bundle), artifact_path="bundle")
        version = tracking.register_logged_model(tracking.log_pyfunc_model(bundle), card, run)
    name = model_registry.registered_model_name(model)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", version.version)
    return bundle


def load(
    send: Callable[[int], bool], n: int, clients: int, timeout: float
) -> tuple[float, list[float], int]:
    """`n` calls of `send(i)` from `clients` threads: (seconds, latencies, errors)."""
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def one(i: int) -> None:
        nonlocal errors
        if time.monotonic() > deadline:
            with lock:
                errors += 1
            return
        t = time.perf_counter()
        try:
            ok = send(i)
        except Exception:
            ok = False
        with lock:
            lat.append(time.perf_counter() - t)
            errors += 0 if ok else 1

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - start, lat, errors


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def session_cpu_s(sid: int) -> float:
    """User + system CPU seconds of every live process in session `sid` (a server started with
    `start_new_session=True`: MLflow's uvicorn child, LitServe's workers, all count)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # fields after the name: state ppid pgrp session ...
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def measured(proc: subprocess.Popen, run: Callable[[], tuple[float, list[float], int]]):
    """`run()` and the CPU seconds the server's session spent during it."""
    before = session_cpu_s(proc.pid)
    seconds, lat, errors = run()
    return seconds, lat, errors, session_cpu_s(proc.pid) - before


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


LITSERVE_APP = textwrap.dedent(
    """
    import base64, sys
    import litserve as ls
    from food_assets.ml.inference.predictor import load_predictor

    class Api(ls.LitAPI):
        def setup(self, device):
            self.p = load_predictor(sys.argv[1])
        def decode_request(self, request):
            return self.p.tensor_from_bytes(base64.b64decode(request["image"]))
        def batch(self, inputs):
            import torch
            return torch.stack(inputs)
        def predict(self, x):
            return self.p.predict_tensor(x)
        def unbatch(self, output):
            return list(output)
        def encode_response(self, probs):
            top = self.p.top_k(probs, 5)
            return {"label": top[0][0], "top_k": [{"label": c, "probability": q} for c, q in top]}

    if __name__ == "__main__":
        server = ls.LitServer(Api(max_batch_size=int(sys.argv[3]),
                              batch_timeout=float(sys.argv[4]) / 1000), accelerator="cpu")
        server.run(host="127.0.0.1", port=int(sys.argv[2]), generate_client_file=False)
    """
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=240, help="per target")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--image-size", type=int, nargs=2, default=(512, 384))
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds, per target")
    ap.add_argument("--litserve", action="store_true", help="also LitServe (pip install litserve)")
    ap.add_argument("--skip-mlflow", action="store_true")
    args = ap.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.requests <= 5000:
        ap.error("--clients in [1, 64] and --requests in [1, 5000]")

    import httpx

    from food_assets.ml.inference.predictor import load_predictor

    images = jpegs(16, tuple(args.image_size))
    results: dict[str, tuple[float, list[float], int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        bundle = register(data, args.model)
        env = os.environ | {
            "PYTHONPATH": str(ROOT),
            "FOOD_ASSETS_DATA_DIR": str(data),
            "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow' / 'mlflow.db'}",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HF_HUB_OFFLINE": "1",
        }

        # 1. In process: the same decode + preprocess + model at the server's batch size.
        predictor = load_predictor(bundle)
        import torch

        def batch_of(i: int) -> None:
            chunk = [images[(i + j) % len(images)] for j in range(args.max_batch)]
            predictor.predict_tensor(torch.stack([predictor.tensor_from_bytes(b) for b in chunk]))

        batch_of(0)
        n_batches = max(1, args.requests // args.max_batch)
        t, cpu = time.perf_counter(), time.process_time()
        for i in range(n_batches):
            batch_of(i)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        per_batch = seconds / n_batches
        scale = args.requests / (n_batches * args.max_batch)
        results["in-process predictor"] = (
            seconds * scale,
            [per_batch] * n_batches,
            0,
            cpu * scale,
        )

        # 2. food-assets serve.
        port = free_port()
        cmd = [sys.executable, "-m", "food_assets.cli", "serve", "--model", "champion"]
        cmd += ["--port", str(port), "--max-batch", str(args.max_batch)]
        cmd += ["--max-wait-ms", str(args.max_wait_ms), "--poll-s", "0"]
        proc = spawn(cmd, env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/ready", proc, args.timeout)
            with httpx.Client(base_url=url, timeout=args.timeout) as c:

                def send_fa(i: int) -> bool:
                    r = c.post(
                        "/predict",
                        content=images[i % len(images)],
                        headers={"content-type": "image/jpeg"},
                    )
                    return r.status_code == 200 and "label" in r.json()

                for i in range(4):
                    send_fa(i)
                results["food-assets serve"] = measured(
                    proc, lambda: load(send_fa, args.requests, args.clients, args.timeout)
                )
        finally:
            stop(proc)

        # 3. mlflow models serve of the same registered model.
        b64 = [base64.b64encode(b).decode() for b in images]
        if not args.skip_mlflow:
            port = free_port()
            cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m"]
            cmd += [f"models:/food_assets.{args.model}@champion", "--env-manager", "local"]
            cmd += ["-h", "127.0.0.1", "-p", str(port)]
            proc = spawn(cmd, env)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_http(f"{url}/ping", proc, args.timeout)
                with httpx.Client(base_url=url, timeout=args.timeout) as c:

                    def send_ml(i: int) -> bool:
                        payload = {
                            "dataframe_split": {"columns": ["image"], "data": [[b64[i % len(b64)]]]}
                        }
                        r = c.post("/invocations", json=payload)
                        return r.status_code == 200 and r.json()["predictions"][0]["label"]

                    for i in range(4):
                        send_ml(i)
                    results["mlflow models serve"] = measured(
                        proc, lambda: load(send_ml, args.requests, args.clients, args.timeout)
                    )
            finally:
                stop(proc)

        # 4. LitServe over the same predictor.
        if args.litserve:
            app = Path(tmp) / "lit_app.py"
            app.write_text(LITSERVE_APP)
            port = free_port()
            cmd = [
                sys.executable,
                str(app),
                str(bundle),
                str(port),
                str(args.max_batch),
                str(args.max_wait_ms),
            ]
            proc = spawn(cmd, env)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_http(f"{url}/health", proc, args.timeout)
                with httpx.Client(base_url=url, timeout=args.timeout) as c:

                    def send_ls(i: int) -> bool:
                        r = c.post("/predict", json={"image": b64[i % len(b64)]})
                        return r.status_code == 200 and "label" in r.json()

                    for i in range(4):
                        send_ls(i)
                    results["LitServe"] = measured(
                        proc, lambda: load(send_ls, args.requests, args.clients, args.timeout)
                    )
            finally:
                stop(proc)

    print(
        f"model {args.model}, {args.image_size[0]}x{args.image_size[1]} JPEG, "
        f"{args.requests} requests per target, {args.clients} clients, batch {args.max_batch}, "
        f"wait {args.max_wait_ms} ms, {os.cpu_count()} CPUs"
    )
    limit = args.requests / results["in-process predictor"][0]
    print(
        f"{'target':<24} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'x limit':>8}"
        f" {'CPU ms/img':>11} {'CPU x limit':>12}"
    )
    limit_cpu = results["in-process predictor"][3] / args.requests
    for name, (seconds, lat, errors, cpu) in results.items():
        rate = args.requests / seconds
        p50 = statistics.median(lat) * 1000
        p99 = float(np.percentile(lat, 99)) * 1000
        per = cpu / args.requests
        print(
            f"{name:<24} {rate:8.1f} {p50:8.1f} {p99:8.1f} {errors:7d} {rate / limit:8.2f}"
            f" {per * 1000:11.1f} {per / limit_cpu:12.2f}"
        )
    if "mlflow models serve" in results:
        ours = args.requests / results["food-assets serve"][0]
        theirs = args.requests / results["mlflow models serve"][0]
        print(f"food-assets serve / mlflow models serve: {ours / theirs:.2f}x")
        cpu_ratio = results["mlflow models serve"][3] / results["food-assets serve"][3]
        print(f"CPU per image, mlflow models serve / food-assets serve: {cpu_ratio:.2f}x")
    if "LitServe" in results:
        ours = args.requests / results["food-assets serve"][0]
        lit = args.requests / results["LitServe"][0]
        print(f"food-assets serve / LitServe: {ours / lit:.2f}x")
        cpu_ratio = results["LitServe"][3] / results["food-assets serve"][3]
        print(f"CPU per image, LitServe / food-assets serve: {cpu_ratio:.2f}x")


if __name__ == "__main__":
    main()
