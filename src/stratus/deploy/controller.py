"""The live side of endpoints: replica sets, rollouts (rolling and canary), the supervisor and the
autoscaler. Runs in the server process; the router (router.py) reads the routing tables it publishes.

Everything that changes replicas runs on background threads; the routing table of an endpoint is replaced
as a whole (an attribute assignment), so the event loop always sees a consistent table.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

from stratus import tenancy
from stratus.deploy.metrics import DeployMetrics
from stratus.deploy.replicas import Placement, check_health, wait_ready
from stratus.deploy.router import LiveEndpoint, Replica, ReplicaClient, Routes, TargetRuntime
from stratus.deploy.spec import CanarySpec, ScalingSpec
from stratus.registry.records import VersionInfo

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 30.0
HEALTH_EVERY_S = 2.0
HEALTH_FAILURES = 3


class Recorder(Protocol):
    """Where the controller writes what happened (the endpoint service, into the metadata DB)."""

    def event(self, endpoint_id: int, kind: str, revision: int | None, detail: dict[str, object]) -> None: ...
    def revision_done(self, endpoint_id: int, revision: int, status: str, message: str) -> None: ...


@dataclass(frozen=True)
class Plan:
    """One revision of an endpoint, with targets pinned to versions."""

    endpoint_id: int
    project: str
    name: str
    revision: int
    targets: list[tuple[VersionInfo, int]]
    shadows: list[VersionInfo]
    sticky_header: str | None
    scaling: ScalingSpec
    rollout: str
    canary: CanarySpec

    @property
    def key(self) -> tuple[str, str]:
        return self.project, self.name


def _shares(weights: list[int]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights]


class Controller:
    def __init__(
        self,
        placement: Placement,
        recorder: Recorder,
        metrics: DeployMetrics,
        entries_for: Callable[[str, VersionInfo], dict[str, bytes]],
        tick_s: float = 0.1,
    ) -> None:
        self._placement = placement
        self._recorder = recorder
        self.metrics = metrics
        self._entries_for = entries_for
        self._tick_s = tick_s
        self._client = ReplicaClient()
        self._http = httpx.Client()
        self._lock = threading.RLock()
        self._endpoints: dict[tuple[str, str], LiveEndpoint] = {}
        self._plans: dict[tuple[str, str], Plan] = {}
        self._rollout_locks: dict[tuple[str, str], threading.Lock] = {}
        self._rolling: set[tuple[str, str]] = set()
        self._load: dict[int, deque[tuple[float, int]]] = {}
        self._last_scale: dict[int, float] = {}
        self._last_health = 0.0
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stratus-endpoints", daemon=True)
        metrics.watch(self._replica_rows)

    # -- what the data plane and the service call ---------------------------------------------------------

    def find(self, name: str) -> LiveEndpoint | None:
        return self._endpoints.get((tenancy.current_project(), name))

    def names(self) -> list[str]:
        project = tenancy.current_project()
        return sorted(name for p, name in list(self._endpoints) if p == project)

    def get(self, project: str, name: str) -> LiveEndpoint | None:
        return self._endpoints.get((project, name))

    def start(self) -> None:
        self._thread.start()

    def apply(self, plan: Plan, wait: bool = False) -> threading.Thread:
        """Roll the endpoint to ``plan`` on a background thread (one rollout at a time per endpoint)."""
        thread = threading.Thread(target=self._rollout, args=(plan,), name=f"stratus-rollout-{plan.name}", daemon=True)
        thread.start()
        if wait:
            thread.join()
        return thread

    def remove(self, project: str, name: str) -> None:
        with self._lock:
            live = self._endpoints.pop((project, name), None)
            self._plans.pop((project, name), None)
        if live is not None:
            for target in [*live.routes.targets, *live.routes.shadows]:
                self._retire(target)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            endpoints = list(self._endpoints.values())
            self._endpoints.clear()
        for live in endpoints:
            for target in [*live.routes.targets, *live.routes.shadows]:
                for replica in target.replicas:
                    replica.state = "stopped"
                    replica.process.kill()
        self._placement.close()
        self._http.close()

    def status(self, project: str, name: str) -> dict[str, object] | None:
        live = self.get(project, name)
        if live is None:
            return None
        routes = live.routes
        return {
            "revision": live.revision,
            "rolling_out": (project, name) in self._rolling,
            "targets": [
                {
                    "model": t.version.model,
                    "version": t.version.version,
                    "traffic": round(share, 4),
                    "replicas": [r.to_dict() for r in t.replicas],
                }
                for t, share in zip(routes.targets, routes.shares, strict=True)
            ],
            "shadows": [
                {"model": t.version.model, "version": t.version.version, "replicas": [r.to_dict() for r in t.replicas]}
                for t in routes.shadows
            ],
        }

    # -- replicas ----------------------------------------------------------------------------------------

    def _new_target(self, plan: Plan, version: VersionInfo) -> TargetRuntime:
        target = TargetRuntime(version, self._entries_for(plan.project, version))
        target.demand = lambda: self._demand(plan.key, target)
        return target

    def _launch(self, plan: Plan, target: TargetRuntime) -> Replica | None:
        """Start one replica of ``target`` and wait until it is ready (None: it did not become ready)."""
        try:
            process = self._placement.start(target.entries)
            replica = Replica(f"r{next(self._ids)}", process)
            with self._lock:
                target.replicas.append(replica)
        finally:
            with self._lock:
                target.pending_starts -= 1
        if wait_ready(process, READY_TIMEOUT_S, self._http) and replica.state == "starting":
            replica.ready_at = time.monotonic()
            replica.state = "ready"
            return replica
        replica.state = "dead"
        process.kill()
        with self._lock:
            if replica in target.replicas:
                target.replicas.remove(replica)
        self._recorder.event(plan.endpoint_id, "replica_failed", plan.revision, {"target": target.label})
        return None

    def _launch_async(
        self, plan: Plan, target: TargetRuntime, then: Callable[[Replica | None], None], counted: bool = False
    ) -> None:
        if not counted:
            with self._lock:
                target.pending_starts += 1

        def run() -> None:
            then(self._launch(plan, target))

        threading.Thread(target=run, name="stratus-replica-start", daemon=True).start()

    def _stop_replica(self, replica: Replica) -> None:
        replica.state = "draining"
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while replica.outstanding > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        replica.state = "stopped"
        replica.process.stop()

    def _retire(self, target: TargetRuntime) -> None:
        """Drain and stop every replica of a target no longer routed to."""
        replicas = list(target.replicas)
        for replica in replicas:
            replica.state = "draining"
        for replica in replicas:
            self._stop_replica(replica)
        with self._lock:
            target.replicas.clear()
            self._load.pop(id(target), None)

    def _demand(self, key: tuple[str, str], target: TargetRuntime) -> None:
        """A request found no ready replica: when the target is at zero, start one (scale from zero)."""
        with self._lock:
            plan = self._plans.get(key)
            if plan is None or target.live() or target.pending_starts:
                return
            target.pending_starts += 1  # counted under the lock, so concurrent requests start only one
        asked = time.monotonic()

        def started(replica: Replica | None) -> None:
            if replica is not None:
                seconds = time.monotonic() - asked
                self.metrics.cold_start.labels(plan.name).observe(seconds)
                self.metrics.scaled(plan.name, target.label, "up")
                self._last_scale[id(target)] = time.monotonic()
                self._recorder.event(
                    plan.endpoint_id,
                    "scaled_from_zero",
                    plan.revision,
                    {"target": target.label, "replicas": 1, "cold_start_seconds": round(seconds, 3)},
                )

        self._launch_async(plan, target, started, counted=True)

    def _bring_up(self, plan: Plan, targets: list[TargetRuntime], shadows: list[TargetRuntime]) -> bool:
        """Start the replicas targets lack (min_replicas, at least 1; shadows 1) in parallel and wait for
        them; True when all are ready."""
        results: list[Replica | None] = []
        threads = []
        for target in [*targets, *shadows]:
            wanted = 1 if target in shadows else max(1, plan.scaling.min_replicas)
            for _ in range(wanted - len(target.live())):
                with self._lock:
                    target.pending_starts += 1
                thread = threading.Thread(target=lambda t=target: results.append(self._launch(plan, t)), daemon=True)
                thread.start()
                threads.append(thread)
        for thread in threads:
            thread.join()
        return all(r is not None for r in results)

    # -- rollouts ----------------------------------------------------------------------------------------

    def _rollout(self, plan: Plan) -> None:
        with self._lock:
            lock = self._rollout_locks.setdefault(plan.key, threading.Lock())
        with lock:
            self._rolling.add(plan.key)
            try:
                self._roll(plan)
            except Exception as exc:  # a rollout that breaks must leave the old revision serving
                log.exception("rollout of endpoint %s revision %d failed", plan.name, plan.revision)
                self._recorder.revision_done(plan.endpoint_id, plan.revision, "failed", f"rollout failed: {exc}")
            finally:
                self._rolling.discard(plan.key)

    def _roll(self, plan: Plan) -> None:
        live = self._endpoints.get(plan.key)
        previous_plan = self._plans.get(plan.key)
        old = live.routes if live is not None else None
        running = {t.version.id: t for t in ([*old.targets, *old.shadows] if old else [])}
        targets = [running.get(v.id) or self._new_target(plan, v) for v, _ in plan.targets]
        shadows = [running.get(v.id) or self._new_target(plan, v) for v in plan.shadows]
        fresh = [t for t in [*targets, *shadows] if t.version.id not in running]
        new_routes = Routes(targets, _shares([w for _, w in plan.targets]), shadows)
        self._recorder.event(
            plan.endpoint_id, "rollout_started", plan.revision, {"mode": plan.rollout, "new": [t.label for t in fresh]}
        )
        if live is None:  # a new endpoint answers at once; its first requests wait for the replicas
            live = LiveEndpoint(plan.project, plan.name, new_routes, plan.sticky_header, self._client, self.metrics)
            with self._lock:
                self._endpoints[plan.key] = live
                self._plans[plan.key] = plan
        if not self._bring_up(plan, targets, shadows):
            for target in fresh:
                self._retire(target)
            if old is None:
                with self._lock:
                    self._endpoints.pop(plan.key, None)
                    self._plans.pop(plan.key, None)
            self._recorder.revision_done(
                plan.endpoint_id, plan.revision, "failed", "new replicas did not become ready; traffic was not moved"
            )
            return
        with self._lock:
            self._plans[plan.key] = plan
        canary_targets = [t for t in targets if t.version.id not in running]
        if plan.rollout == "canary" and old is not None and canary_targets:
            failure = self._canary(plan, live, old, new_routes, canary_targets)
            if failure:
                live.routes = old
                with self._lock:
                    if previous_plan is not None:
                        self._plans[plan.key] = previous_plan  # the old revision's scaling applies again
                for target in fresh:
                    self._retire(target)
                self.metrics.rollbacks.labels(plan.name).inc()
                self._recorder.event(plan.endpoint_id, "rolled_back", plan.revision, {"reason": failure})
                self._recorder.revision_done(plan.endpoint_id, plan.revision, "rolled_back", failure)
                return
        if self._endpoints.get(plan.key) is not live:  # deleted while it rolled out
            for target in fresh:
                self._retire(target)
            return
        live.routes = new_routes
        live.sticky_header = plan.sticky_header
        live.revision = plan.revision
        self._recorder.event(plan.endpoint_id, "traffic_shifted", plan.revision, {"percent": 100})
        kept = {id(t) for t in [*targets, *shadows]}
        for target in running.values():
            if id(target) not in kept:
                self._retire(target)
        self._recorder.revision_done(plan.endpoint_id, plan.revision, "live", "")

    def _canary(self, plan: Plan, live: LiveEndpoint, old: Routes, new: Routes, watched: list[TargetRuntime]) -> str:
        """Move traffic in steps; return why it failed, or "" when every step passed."""
        spec = plan.canary
        for step in spec.steps[:-1]:
            share = step / 100
            merged: dict[int, tuple[TargetRuntime, float]] = {}
            for routes, weight in ((old, 1 - share), (new, share)):
                for target, s in zip(routes.targets, routes.shares, strict=True):
                    prior = merged.get(id(target), (target, 0.0))[1]
                    merged[id(target)] = (target, prior + s * weight)
            live.routes = Routes([t for t, _ in merged.values()], [s for _, s in merged.values()], new.shadows)
            self._recorder.event(plan.endpoint_id, "traffic_shifted", plan.revision, {"percent": step})
            began = time.monotonic()
            while time.monotonic() - began < spec.step_seconds:
                time.sleep(min(0.2, spec.step_seconds))
                failure = self._judge(spec, watched, began)
                if failure:
                    return failure
        return ""

    @staticmethod
    def _judge(spec: CanarySpec, watched: list[TargetRuntime], since: float) -> str:
        for target in watched:
            count, failed, p99 = target.window(since)
            if count and failed / count > spec.max_error_rate:
                return (
                    f"{target.label}: error rate {failed / count:.1%} over {count} requests > {spec.max_error_rate:.1%}"
                )
            if spec.max_p99_ms is not None and count >= 20 and p99 * 1000 > spec.max_p99_ms:
                return f"{target.label}: p99 latency {p99 * 1000:.0f} ms > {spec.max_p99_ms:.0f} ms"
        return ""

    # -- supervisor and autoscaler -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            try:
                self._tick()
            except Exception:
                log.exception("endpoint supervisor tick failed")

    def _tick(self) -> None:
        now = time.monotonic()
        check_health_now = now - self._last_health >= HEALTH_EVERY_S
        if check_health_now:
            self._last_health = now
        for key, live in list(self._endpoints.items()):
            plan = self._plans.get(key)
            if plan is None:
                continue
            routes = live.routes
            for target in [*routes.targets, *routes.shadows]:
                self._supervise(plan, target, check_health_now)
            if key not in self._rolling:
                for target, share in zip(routes.targets, routes.shares, strict=True):
                    if share > 0:
                        self._autoscale(plan, target, now)

    def _supervise(self, plan: Plan, target: TargetRuntime, check: bool) -> None:
        for replica in list(target.replicas):
            if replica.state not in ("ready", "dead"):
                continue
            if replica.state == "ready" and check:
                healthy = check_health(replica.process, self._http, timeout_s=0.5)
                replica.health_failures = 0 if healthy else replica.health_failures + 1
                if replica.health_failures >= HEALTH_FAILURES:
                    replica.state = "dead"
            if replica.state == "ready" and replica.process.alive():
                continue
            # Dead: it exited, the router saw its connection drop, or it failed its health checks.
            replica.state = "dead"
            replica.process.kill()
            code = getattr(getattr(replica.process, "process", None), "returncode", None)
            with self._lock:
                if replica in target.replicas:
                    target.replicas.remove(replica)
            self.metrics.restarts.labels(plan.name).inc()
            died = time.monotonic()

            def replaced(
                new: Replica | None, old: Replica = replica, code: int | None = code, died: float = died
            ) -> None:
                self._recorder.event(
                    plan.endpoint_id,
                    "replica_restarted",
                    plan.revision,
                    {
                        "target": target.label,
                        "replaced": old.id,
                        "pid": old.process.pid,
                        "exit_code": code,
                        "by": new.id if new else None,
                        "ready_seconds": round(time.monotonic() - died, 3) if new else None,
                    },
                )

            self._launch_async(plan, target, replaced)

    def _autoscale(self, plan: Plan, target: TargetRuntime, now: float) -> None:
        scaling = plan.scaling
        samples = self._load.setdefault(id(target), deque())
        samples.append((now, target.in_flight()))
        horizon = max(scaling.scale_up_seconds, scaling.cooldown_seconds)
        while samples and samples[0][0] < now - horizon:
            samples.popleft()
        if target.pending_starts or any(r.state in ("starting", "dead") for r in target.replicas):
            return  # a replica is being started or replaced: judge the load once the set is stable
        live = len(target.live())
        since_scale = now - self._last_scale.get(id(target), 0.0)
        if live == 0:
            return  # at zero: the next request scales up (router -> _demand)
        up_window = [n for t, n in samples if t >= now - scaling.scale_up_seconds]
        spanned = samples[0][0] <= now - scaling.scale_up_seconds * 0.9
        pressure = sum(up_window) / len(up_window)
        if (
            live < scaling.max_replicas
            and spanned
            and since_scale >= scaling.scale_up_seconds
            and pressure > scaling.target_in_flight * live
        ):
            wanted = min(scaling.max_replicas, math.ceil(pressure / scaling.target_in_flight))
            self._scale(plan, target, live, max(wanted, live + 1))
            return
        quiet = samples[0][0] <= now - scaling.cooldown_seconds * 0.95 and since_scale >= scaling.cooldown_seconds
        if not quiet:
            return
        # Down only with a margin (70% of what one replica fewer could take), so load near a boundary does
        # not add and remove a replica in turn.
        average = sum(n for _, n in samples) / len(samples)
        if live > max(scaling.min_replicas, 1) and average <= 0.7 * scaling.target_in_flight * (live - 1):
            self._scale(plan, target, live, live - 1)
        elif (
            live == 1
            and scaling.min_replicas == 0
            and all(n == 0 for _, n in samples)
            and now - target.last_request >= scaling.cooldown_seconds
        ):
            self._scale(plan, target, live, 0)

    def _scale(self, plan: Plan, target: TargetRuntime, current: int, wanted: int) -> None:
        self._last_scale[id(target)] = time.monotonic()
        self._load.pop(id(target), None)
        direction = "up" if wanted > current else "down"
        kind = "scaled_to_zero" if wanted == 0 else f"scale_{direction}"
        self.metrics.scaled(plan.name, target.label, direction)
        self._recorder.event(
            plan.endpoint_id, kind, plan.revision, {"target": target.label, "from": current, "to": wanted}
        )
        if wanted > current:
            for _ in range(wanted - current):
                self._launch_async(plan, target, lambda _r: None)
            return
        ready = sorted(target.ready(), key=lambda r: r.outstanding)
        for replica in ready[: current - wanted]:
            replica.state = "draining"

            def stop(r: Replica = replica) -> None:
                self._stop_replica(r)
                with self._lock:
                    if r in target.replicas:
                        target.replicas.remove(r)

            threading.Thread(target=stop, name="stratus-replica-stop", daemon=True).start()

    def _replica_rows(self) -> list[tuple[str, str, str, int]]:
        rows = []
        for (_project, name), live in list(self._endpoints.items()):
            routes = live.routes
            for target in [*routes.targets, *routes.shadows]:
                counts: dict[str, int] = {"ready": 0, "starting": 0}
                for replica in list(target.replicas):
                    counts[replica.state] = counts.get(replica.state, 0) + 1
                rows += [(name, target.label, state, n) for state, n in counts.items()]
        return rows
