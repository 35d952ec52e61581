"""Prometheus series of endpoints, registered on the data plane's registry so /metrics shows them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_COLD_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)

#: (endpoint, target "model:version", replica state, count) rows, read at scrape time.
ReplicaRows = Callable[[], list[tuple[str, str, str, int]]]


class _ReplicaCollector(Collector):
    def __init__(self, rows: ReplicaRows) -> None:
        self._rows = rows

    def collect(self) -> Any:
        family = GaugeMetricFamily(
            "stratus_endpoint_replicas",
            "Replica processes of an endpoint's target, by state.",
            labels=["endpoint", "target", "state"],
        )
        for endpoint, target, state, count in self._rows():
            family.add_metric([endpoint, target, state], count)
        yield family


class DeployMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.scale_events = Counter(
            "stratus_endpoint_scale_events",
            "Replicas added (up) or removed (down) by the autoscaler.",
            ["endpoint", "target", "direction"],
            registry=registry,
        )
        self.cold_start = Histogram(
            "stratus_endpoint_cold_start_seconds",
            "Time from the first request to a target scaled to zero until a replica is ready.",
            ["endpoint"],
            buckets=_COLD_START_BUCKETS,
            registry=registry,
        )
        self.restarts = Counter(
            "stratus_endpoint_replica_restarts",
            "Replicas replaced after they died or failed health checks.",
            ["endpoint"],
            registry=registry,
        )
        self.retries = Counter(
            "stratus_endpoint_retries",
            "Requests retried on another replica after theirs died.",
            ["endpoint"],
            registry=registry,
        )
        self.shadows = Counter(
            "stratus_endpoint_shadow_requests",
            "Copies of requests sent to shadow targets (responses dropped).",
            ["endpoint", "target", "outcome"],
            registry=registry,
        )
        self.rollbacks = Counter(
            "stratus_endpoint_rollbacks", "Canary rollouts rolled back automatically.", ["endpoint"], registry=registry
        )

    def watch(self, rows: ReplicaRows) -> None:
        self.registry.register(_ReplicaCollector(rows))

    def scaled(self, endpoint: str, target: str, direction: str) -> None:
        self.scale_events.labels(endpoint, target, direction).inc()

    def retried(self, endpoint: str) -> None:
        self.retries.labels(endpoint).inc()

    def shadow(self, endpoint: str, target: str, outcome: str) -> None:
        self.shadows.labels(endpoint, target, outcome).inc()
