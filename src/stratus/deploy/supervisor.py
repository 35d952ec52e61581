"""The supervisor: find replicas that died (exited, dropped a connection, or failed their health checks in
a row) and replace them. The verdict on one replica is a pure function (``replica_verdict``); the
``Supervisor`` probes, and asks the replica set to kill and start."""

from __future__ import annotations

import math
from typing import Literal

from stratus.deploy.clock import Clock
from stratus.deploy.metrics import DeployMetrics, EndpointKey
from stratus.deploy.replicaset import ReplicaSet, Report
from stratus.deploy.router import Replica, TargetRuntime

HEALTH_EVERY_S = 2.0
HEALTH_FAILURES = 3

Verdict = Literal["skip", "keep", "replace"]


def replica_verdict(state: str, alive: bool, healthy: bool | None, failures: int) -> tuple[Verdict, int]:
    """What to do with one replica, and its count of health checks failed in a row.

    ``healthy`` is None when no health check ran this time. Replicas starting, draining or stopped are
    not the supervisor's (``skip``); a ready one that is alive and has not failed ``HEALTH_FAILURES``
    checks in a row stays; the rest (dead by the router's word, exited, or unhealthy) are replaced.
    """
    if state not in ("ready", "dead"):
        return "skip", failures
    if state == "ready" and healthy is not None:
        failures = 0 if healthy else failures + 1
    if state == "ready" and alive and failures < HEALTH_FAILURES:
        return "keep", failures
    return "replace", failures


class Supervisor:
    def __init__(self, replicas: ReplicaSet, metrics: DeployMetrics, clock: Clock) -> None:
        self._replicas = replicas
        self._metrics = metrics
        self._clock = clock
        self._last_health = -math.inf

    def health_due(self) -> bool:
        """Whether this tick checks health (every ``HEALTH_EVERY_S``; liveness every tick)."""
        now = self._clock.now()
        if now - self._last_health < HEALTH_EVERY_S:
            return False
        self._last_health = now
        return True

    def check(self, endpoint: EndpointKey, target: TargetRuntime, report: Report, probe_health: bool) -> int:
        """Replace the dead replicas of ``target`` of ``endpoint`` (project, name); returns how many it replaced."""
        replaced = 0
        for replica in list(target.replicas):
            healthy = self._replicas.healthy(replica.process) if probe_health and replica.state == "ready" else None
            verdict, replica.health_failures = replica_verdict(
                replica.state, replica.process.alive(), healthy, replica.health_failures
            )
            if verdict != "replace":
                continue
            self._replace(endpoint, target, replica, report)
            replaced += 1
        return replaced

    def _replace(self, endpoint: EndpointKey, target: TargetRuntime, replica: Replica, report: Report) -> None:
        self._replicas.kill(target, replica)
        code = getattr(getattr(replica.process, "process", None), "returncode", None)  # after the kill: set
        self._metrics.restarted(endpoint)
        died = self._clock.now()

        def replaced(new: Replica | None) -> None:
            report(
                "replica_restarted",
                {
                    "target": target.label,
                    "replaced": replica.id,
                    "pid": replica.process.pid,
                    "exit_code": code,
                    "by": new.id if new else None,
                    "ready_seconds": round(self._clock.now() - died, 3) if new else None,
                },
            )

        self._replicas.launch_async(target, report, replaced)
