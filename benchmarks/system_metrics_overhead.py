"""What MLflow's system metrics cost a training loop (ADR 0023).

The same training steps of the custom CNN (batch 16, 64 px, CPU) inside an MLflow run of a
fresh SQLite store, with `log_system_metrics` off, on at the model run's default interval (5 s)
and on at 0.5 s (ten times as often), in alternating rounds; prints the median wall time of each
and its ratio to "off". The baseline is the same loop with no monitor thread.

    flock /tmp/food_bench.lock .venv/bin/python benchmarks/system_metrics_overhead.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _train(steps: int) -> None:
    import torch

    from food_assets.ml.models import create_model

    torch.manual_seed(0)
    model = create_model("custom_cnn", num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 3, 64, 64), torch.randint(0, 10, (16,))
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _round(uri: str, interval: float | None, steps: int) -> float:
    import mlflow

    mlflow.set_tracking_uri(uri)
    if interval is not None:
        mlflow.set_system_metrics_sampling_interval(interval)
    t0 = time.perf_counter()
    with mlflow.start_run(log_system_metrics=interval is not None):
        _train(steps)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        _round(uri, None, 2)  # warm-up: store schema, torch kernels
        sides = {"off": None, "on, 5 s": 5.0, "on, 0.5 s": 0.5}
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(args.rounds):
            for name, interval in sides.items():
                times[name].append(_round(uri, interval, args.steps))
    base = statistics.median(times["off"])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"system metrics {name:<10} {med:7.2f} s  ratio to off: {med / base:.3f}x")


if __name__ == "__main__":
    main()
