"""Prometheus series of endpoints, registered on the data plane's registry so /metrics shows them. Every
series carries the endpoint's ``project`` (last), so each tenant's /metrics view holds only its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from stratus.runtime.metrics import PROJECT_LABEL

_COLD_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)

#: (project, endpoint, target "model:version", replica state, count) rows, read at scrape time.
ReplicaRows = Callable[[], list[tuple[str, str, str, str, int]]]
#: An endpoint as its project and name.
EndpointKey = tuple[str, str]


class _ReplicaCollector(Collector):
    def __init__(self, rows: ReplicaRows) -> None:
        self._rows = rows

    def collect(self) -> Any:
        family = GaugeMetricFamily(
            "stratus_endpoint_replicas",
            "Replica processes of an endpoint's target, by state.",
            labels=["endpoint", "target", "state", PROJECT_LABEL],
        )
        for project, endpoint, target, state, count in self._rows():
            family.add_metric([endpoint, target, state, project], count)
        yield family


class DeployMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.scale_events = Counter(
            "stratus_endpoint_scale_events",
            "Replicas added (up) or removed (down) by the autoscaler.",
            ["endpoint", "target", "direction", PROJECT_LABEL],
            registry=registry,
        )
        self.cold_start = Histogram(
            "stratus_endpoint_cold_start_seconds",
            "Time from the first request to a target scaled to zero until a replica is ready.",
            ["endpoint", PROJECT_LABEL],
            buckets=_COLD_START_BUCKETS,
            registry=registry,
        )
        self.restarts = Counter(
            "stratus_endpoint_replica_restarts",
            "Replicas replaced after they died or failed health checks.",
            ["endpoint", PROJECT_LABEL],
            registry=registry,
        )
        self.retries = Counter(
            "stratus_endpoint_retries",
            "Requests retried on another replica after theirs died.",
            ["endpoint", PROJECT_LABEL],
            registry=registry,
        )
        self.shadows = Counter(
            "stratus_endpoint_shadow_requests",
            "Copies of requests sent to shadow targets (responses dropped).",
            ["endpoint", "target", "outcome", PROJECT_LABEL],
            registry=registry,
        )
        self.rollbacks = Counter(
            "stratus_endpoint_rollbacks",
            "Canary rollouts rolled back automatically.",
            ["endpoint", PROJECT_LABEL],
            registry=registry,
        )

    def watch(self, rows: ReplicaRows) -> None:
        self.registry.register(_ReplicaCollector(rows))

    def scaled(self, endpoint: EndpointKey, target: str, direction: str) -> None:
        project, name = endpoint
        self.scale_events.labels(name, target, direction, project).inc()

    def cold_started(self, endpoint: EndpointKey, seconds: float) -> None:
        project, name = endpoint
        self.cold_start.labels(name, project).observe(seconds)

    def restarted(self, endpoint: EndpointKey) -> None:
        project, name = endpoint
        self.restarts.labels(name, project).inc()

    def rolled_back(self, endpoint: EndpointKey) -> None:
        project, name = endpoint
        self.rollbacks.labels(name, project).inc()

    def retried(self, endpoint: EndpointKey) -> None:
        project, name = endpoint
        self.retries.labels(name, project).inc()

    def shadow(self, endpoint: EndpointKey, target: str, outcome: str) -> None:
        project, name = endpoint
        self.shadows.labels(name, target, outcome, project).inc()
