"""Load test of the Gradio demo on loopback against the same predictions without a web layer.

Everything happens in one run, in its own temporary data folder (not `./data`): an untrained
`custom_cnn` at its registry preprocessing (224 px, 101 classes) is saved as a bundle and an ONNX
export there (latency does not depend on the weights' values), and the demo server is started
with `FOOD_ASSETS_DATA_DIR` (and Gradio's upload folder) pointing into it. `--data-dir` serves
the models of an existing data folder instead.

1. Baselines, in this process, one call after another (`--requests` calls each, after one
   warm-up call), with the demo's own decode (`open_image(path, draft_size=input_size)`):
   - `Predictor`: `load_predictor(...).predict_images([image])` and the top 3, what the demo
     computes for the label (ONNX Runtime when there is an export);
   - `DemoService.predict`: the demo's whole request (top 3 + Grad-CAM overlay), no web layer.
2. The web path: `food_assets.demo.launch` (exactly what `food-assets demo` runs) in a
   subprocess on a free 127.0.0.1 port; one warm-up request (the model loads on first use), then
   `--requests` predictions fired at once through `gradio_client` (upload + queue + top 3 +
   Grad-CAM), each on its own thread. Requests queue on one worker, so their latency is mostly
   queue wait: the throughput is the figure to compare.

Prints each path's throughput and latency and the ratios web / baseline; the web answer's top 3
must match the `Predictor`'s. Everything is bounded by `--timeout`; the server is stopped and the
temporary folder removed at the end.

    .venv/bin/python benchmarks/demo_load.py
    .venv/bin/python benchmarks/demo_load.py --requests 20
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
PREDICTOR = "Predictor, top 3 (baseline, sequential)"
SERVICE = "DemoService.predict, top 3 + Grad-CAM (seq.)"


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
    # Untrained, these nets give near-equal logits (all 101 probabilities 1/101), so any top 3
    # would "match"; random head biases make the classes distinct and the comparison meaningful.
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(getattr(head, "bias", None), torch.Tensor):
        with torch.no_grad():
            head.bias.normal_()
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


def summary(label: str, latencies: list[float], wall: float) -> float:
    """Print one path's throughput and latency; return its throughput (calls/s)."""
    rate = len(latencies) / wall
    print(
        f"  {label:44s} {rate:6.2f} req/s  latency ms: median "
        f"{statistics.median(latencies) * 1000:6.0f}, p95 {percentile(latencies, 95) * 1000:6.0f}"
    )
    return rate


def run_sequential(fn, n: int) -> tuple[list[float], float]:
    """`n` timed calls of `fn`, one after another; latencies and wall time."""
    latencies = []
    t_start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - t_start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="default: a fresh temporary data folder")
    ap.add_argument("--model", default=None, help="default: the first materialized model")
    ap.add_argument("--requests", type=int, default=50, help="calls per path (web: all at once)")
    ap.add_argument("--image", default=None, help="default: a bundled example photo")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for the whole burst")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()[0]  # the machine is shared: say how busy it was

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import numpy as np

    from food_assets import catalog
    from food_assets.demo import DemoService, example_images
    from food_assets.ml.data.images import open_image
    from food_assets.ml.inference.predictor import load_predictor

    tmp = tempfile.TemporaryDirectory(prefix="demo_load_")
    work = Path(tmp.name)
    if args.data_dir:
        root = catalog.data_dir(args.data_dir)
    else:
        untrained = args.model or "custom_cnn"
        print(f"temporary data folder {work / 'data'}: an untrained {untrained}, 101 classes")
        root = make_untrained(work / "data", untrained)
    models = {m.name: m for m in catalog.list_materialized(root)}
    if not models:
        sys.exit(f"no materialized model under {root}")
    name = args.model or next(iter(models))
    if name not in models:
        sys.exit(f"model {name!r} is not materialized under {root}: {', '.join(models)}")
    image = Path(args.image) if args.image else example_images()[0]
    print(f"model {name} from {models[name].best_path}")
    print(f"image {image} ({image.stat().st_size / 1024:.1f} KiB), {args.requests} calls per path")

    # -- baselines: no web layer ------------------------------------------------------------
    predictor = load_predictor(models[name].best_path)

    def predictor_top3() -> list[tuple[str, float]]:
        img = open_image(image, draft_size=predictor.preprocess.input_size)  # as the demo does
        probs = predictor.predict_images([img])[0]
        order = np.argsort(-probs, kind="stable")[:3]
        return [(predictor.class_names[i], float(probs[i])) for i in order]

    service = DemoService(root, default_model=name)

    def service_predict() -> None:
        result = service.predict(str(image), name)
        if not result.ok:
            raise RuntimeError(f"DemoService.predict failed: {result.message}")

    expected = predictor_top3()  # warm-up
    service_predict()  # warm-up: loads the model and its Grad-CAM copy
    lat_predictor, wall_predictor = run_sequential(predictor_top3, args.requests)
    lat_service, wall_service = run_sequential(service_predict, args.requests)

    # -- the web path --------------------------------------------------------------------------
    port = free_port()
    env = {
        **os.environ,
        "FOOD_ASSETS_DATA_DIR": str(root),
        "GRADIO_TEMP_DIR": str(work / "gradio"),  # uploads land in the temporary folder too
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
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
        answers: list[list[tuple[str, float]]] = []

        def one() -> float:
            t0 = time.perf_counter()
            top, _overlay, _info, message = client.predict(
                handle_file(str(image)), name, api_name="/predict"
            )
            elapsed = time.perf_counter() - t0
            if message or len(top.get("confidences", [])) != 3:
                raise RuntimeError(f"bad answer: {message or top}")
            answers.append([(c["label"], float(c["confidence"])) for c in top["confidences"]])
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
        same = all(
            [label for label, _ in a] == [label for label, _ in expected]
            and max(abs(p - q) for (_, p), (_, q) in zip(a, expected, strict=True)) < 1e-4
            for a in answers
        )

        print(f"web: cold first request (model load) {cold * 1000:.0f} ms; {ok}/{args.requests} ok")
        print(
            f"top 3 of every web answer {'matches' if same else 'DIFFERS FROM'} the Predictor's: "
            + ", ".join(f"{label} {p:.4f}" for label, p in expected)
        )
        rate_predictor = summary(PREDICTOR, lat_predictor, wall_predictor)
        rate_service = summary(SERVICE, lat_service, wall_service)
        if latencies:
            rate_web = summary(f"web, {args.requests} at once (top 3 + Grad-CAM)", latencies, wall)
            print(f"  ratio web / DemoService.predict throughput: {rate_web / rate_service:.2f}x")
            print(f"  ratio web / Predictor throughput:           {rate_web / rate_predictor:.2f}x")
        print(f"load average (1 min): {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end")
        for exc in errors[:5]:
            print(f"error: {type(exc).__name__}: {exc}")
        if pending:
            print(f"{len(pending)} requests did not finish within {args.timeout:g} s")
        return 0 if ok == args.requests and same else 1
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
