"""Prometheus metrics of the data plane. Each Platform has its own registry, so several servers in one
process (tests) do not share counters. Labelled children are cached: ``labels()`` is not free.

Every series that names a model or an endpoint carries the ``project`` label (last, so label order stays
``model, version, ...`` for readers that match a prefix). ``render(project=...)`` gives one tenant's view:
only the series of that project, nothing platform-wide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

PROJECT_LABEL = "project"
#: (project, model, version, bytes, queued requests) of each loaded version.
PoolRows = Callable[[], list[tuple[str, str, str, int, int]]]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _PoolCollector(Collector):
    """Reads loaded models and queue depths at scrape time instead of tracking them on every request."""

    def __init__(self, snapshot: PoolRows) -> None:
        self._snapshot = snapshot

    def collect(self) -> Any:
        loaded = GaugeMetricFamily("stratus_models_loaded", "Model versions loaded in memory.")
        memory = GaugeMetricFamily(
            "stratus_model_memory_bytes",
            "Bytes of ONNX held by a loaded model version.",
            labels=["model", "version", PROJECT_LABEL],
        )
        depth = GaugeMetricFamily(
            "stratus_inference_queue_depth",
            "Requests waiting in a model's batching queue.",
            labels=["model", "version", PROJECT_LABEL],
        )
        rows = self._snapshot()
        loaded.add_metric([], len(rows))
        for project, model, version, size, queued in rows:
            memory.add_metric([model, version, project], size)
            depth.add_metric([model, version, project], queued)
        yield loaded
        yield memory
        yield depth


class InferenceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model", "version", "protocol", PROJECT_LABEL]
        per_version = ["model", "version", PROJECT_LABEL]
        self.requests = Counter(
            "stratus_inference_requests", "Inference requests served.", labels, registry=self.registry
        )
        self.failures = Counter(
            "stratus_inference_failures", "Inference requests that failed.", [*labels, "code"], registry=self.registry
        )
        self.latency = Histogram(
            "stratus_inference_request_duration_seconds",
            "End-to-end time of an inference request inside the server.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_time = Histogram(
            "stratus_inference_queue_duration_seconds",
            "Time a request waited in the batching queue.",
            per_version,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.compute_time = Histogram(
            "stratus_inference_compute_duration_seconds",
            "Time of one ONNX Runtime run (one batch).",
            per_version,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "stratus_inference_batch_size",
            "Rows per ONNX Runtime run.",
            per_version,
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )

    def watch_pool(self, snapshot: PoolRows) -> None:
        self.registry.register(_PoolCollector(snapshot))

    @lru_cache(maxsize=4096)  # noqa: B019 - one instance per platform; the cache is its label table
    def request_series(self, project: str, model: str, version: str, protocol: str) -> tuple[Any, Any]:
        return (
            self.requests.labels(model, version, protocol, project),
            self.latency.labels(model, version, protocol, project),
        )

    @lru_cache(maxsize=4096)  # noqa: B019
    def batch_series(self, project: str, model: str, version: str) -> tuple[Any, Any, Any]:
        return (
            self.queue_time.labels(model, version, project),
            self.compute_time.labels(model, version, project),
            self.batch_size.labels(model, version, project),
        )

    def failed(self, project: str, model: str, version: str, protocol: str, code: str) -> None:
        self.failures.labels(model, version, protocol, project, code).inc()

    def render(self, project: str | None = None) -> bytes:
        """The exposition: everything, or with ``project`` only that project's series."""
        if project is None:
            return generate_latest(self.registry)
        return generate_latest(_ProjectView(self.registry, project))


class _ProjectView:
    """A registry seen by one tenant: each family keeps only the samples labelled with its project, so a
    series with no project label (a platform-wide figure) is left out too."""

    def __init__(self, registry: CollectorRegistry, project: str) -> None:
        self._registry = registry
        self._project = project

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            view = Metric(family.name, family.documentation, family.type, family.unit)
            view.samples = [s for s in family.samples if s.labels.get(PROJECT_LABEL) == self._project]
            yield view
