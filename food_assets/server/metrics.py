"""Prometheus metrics of one server, in a registry of its own (two servers in one process, as in
the tests, do not share counters)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from food_assets.server.models import ServedModel

#: Paths counted under their own name; anything else is `other` (no unbounded label values).
KNOWN_PATHS = frozenset({"/predict", "/health", "/ready", "/metrics", "/docs", "/openapi.json"})


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "food_assets_requests",
            "HTTP requests by path and status code",
            ["path", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "food_assets_request_seconds",
            "Request latency by path",
            ["path"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "food_assets_batch_size",
            "Images per model call (dynamic batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.model = Gauge(
            "food_assets_model_info",
            "The model answering now (1) and the ones it replaced (0)",
            ["model", "version", "backend", "precision"],
            registry=self.registry,
        )
        self.swaps = Counter(
            "food_assets_model_loads",
            "Models loaded (the first and each swap)",
            registry=self.registry,
        )

    def request(self, path: str, status: int, seconds: float) -> None:
        label = path if path in KNOWN_PATHS else "other"
        self.requests.labels(label, str(status)).inc()
        self.latency.labels(label).observe(seconds)

    def model_loaded(self, model: ServedModel) -> None:
        for sample in list(self.model.collect()[0].samples):
            self.model.labels(**sample.labels).set(0)
        self.model.labels(model.name, model.version or "", model.backend, model.precision).set(1)
        self.swaps.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
