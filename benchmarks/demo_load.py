"""Load test of the Gradio demo on loopback: N concurrent predictions, all must succeed.

Starts `food_assets.demo.launch` (exactly what `food-assets demo` runs) in a subprocess on a free
127.0.0.1 port, waits for it, sends one warm-up request (the model loads on first use), then
fires `--requests` predictions at once through `gradio_client` (upload + queue + top-3 +
Grad-CAM), each with its own thread. Prints the median and 95th-percentile end-to-end latency
and the throughput. Everything is bounded by `--timeout`; the server is stopped at the end.

Without `--data-dir` the models of FOOD_ASSETS_DATA_DIR (default ./data) are served; when there
is none, an untrained `custom_cnn` at its registry preprocessing (224 px) is exported to a
temporary folder: latency does not depend on the weights' values.

    .venv/bin/python benchmarks/demo_load.py
    .venv/bin/python benchmarks/demo_load.py --data-dir data --model resnet50 --requests 100
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

NUM_CLASSES = 101


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_untrained(root: Path, name: str = "custom_cnn") -> Path:
    """A bundle and ONNX export of an untrained registry model, laid out like a run's."""
    import torch

    from food_assets import catalog
    from food_assets.ml.export import export_onnx
    from food_assets.ml.models.bundle import ModelCard, save_bundle
    from food_assets.ml.models.registry import create_model, get_model_spec

    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, weights="none").eval()
    classes = [f"class_{i:03d}" for i in range(NUM_CLASSES)]
    card = ModelCard(name=name, class_names=classes, preprocess=get_model_spec(name).preprocess())
    save_bundle(catalog.bundle_path(name, root), model, card)
    export_onnx(model, card, catalog.onnx_path(name, root))
    return root


def wait_for(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the demo exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"the demo did not answer at {url} within {timeout:g} s")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    k = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[min(k, len(ordered) - 1)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="default: FOOD_ASSETS_DATA_DIR or ./data")
    ap.add_argument("--model", default=None, help="default: the first materialized model")
    ap.add_argument("--requests", type=int, default=50, help="predictions fired at once")
    ap.add_argument("--image", default=None, help="default: a bundled example photo")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for the whole burst")
    args = ap.parse_args(argv)

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from food_assets import catalog
    from food_assets.demo import example_images

    tmp = tempfile.TemporaryDirectory(prefix="demo_load_")
    root = catalog.data_dir(args.data_dir)
    if not catalog.list_materialized(root):
        print(f"no model under {root}; exporting an untrained custom_cnn (224 px, 101 classes)")
        root = make_untrained(Path(tmp.name) / "data")
    models = {m.name: m for m in catalog.list_materialized(root)}
    name = args.model or next(iter(models))
    if name not in models:
        sys.exit(f"model {name!r} is not materialized under {root}: {', '.join(models)}")
    image = Path(args.image) if args.image else example_images()[0]

    port = free_port()
    env = {**os.environ, "FOOD_ASSETS_DATA_DIR": str(root), "GRADIO_ANALYTICS_ENABLED": "False"}
    code = f"from food_assets.demo import launch; launch({name!r}, port={port})"
    server = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, server, timeout=120)
        from gradio_client import Client, handle_file

        client = Client(
            url,
            verbose=False,
            analytics_enabled=False,
            download_files=False,  # the overlay stays a URL: measure the server, not the copy
            max_workers=max(40, args.requests),
        )

        def one() -> float:
            t0 = time.perf_counter()
            top, _overlay, _info, message = client.predict(
                handle_file(str(image)), name, api_name="/predict"
            )
            elapsed = time.perf_counter() - t0
            if message or len(top.get("confidences", [])) != 3:
                raise RuntimeError(f"bad answer: {message or top}")
            return elapsed

        cold = one()
        pool = cf.ThreadPoolExecutor(max_workers=args.requests)
        t0 = time.perf_counter()
        futures = [pool.submit(one) for _ in range(args.requests)]
        done, pending = cf.wait(futures, timeout=args.timeout)
        wall = time.perf_counter() - t0
        # Not waiting for stragglers: stopping the server below makes them fail fast.
        pool.shutdown(wait=False, cancel_futures=True)
        errors = [f.exception() for f in done if f.exception() is not None]
        latencies = [f.result() for f in done if f.exception() is None]
        ok = len(latencies)
        print(f"model {name} from {models[name].best_path}")
        print(f"image {image} ({image.stat().st_size / 1024:.1f} KiB)")
        print(f"cold first request (model load): {cold * 1000:.0f} ms")
        print(f"{ok}/{args.requests} succeeded in {wall:.1f} s ({ok / wall:.2f} req/s)")
        if latencies:
            print(
                f"latency ms: median {statistics.median(latencies) * 1000:.0f}, "
                f"p95 {percentile(latencies, 95) * 1000:.0f}, "
                f"min {min(latencies) * 1000:.0f}, max {max(latencies) * 1000:.0f}"
            )
        for exc in errors[:5]:
            print(f"error: {type(exc).__name__}: {exc}")
        if pending:
            print(f"{len(pending)} requests did not finish within {args.timeout:g} s")
        return 0 if ok == args.requests else 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
