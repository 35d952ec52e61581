"""The live side of endpoints, put together: the replica set (replicaset.py) starts and stops replicas,
rollouts (rollout.py) move an endpoint to a new revision, the supervisor (supervisor.py) replaces dead
replicas and the autoscaler (autoscale.py) sizes each target. Each part decides through a pure function
and reads an injected clock; this module holds the endpoints' slots, runs the supervisor's tick, and
answers the data plane (``find``, ``names``) and the status view. The router (router.py) reads the
routing tables the rollouts publish; a table is replaced as a whole, so the event loop always sees a
consistent one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from stratus import tenancy
from stratus.deploy.autoscale import Autoscaler, ScaleListener
from stratus.deploy.clock import Clock, MonotonicClock
from stratus.deploy.metrics import DeployMetrics
from stratus.deploy.plan import Plan, Recorder, Slot
from stratus.deploy.replicas import Placement
from stratus.deploy.replicaset import HealthProbe, HttpProbes, ReadyProbe, ReplicaSet, Report
from stratus.deploy.rollout import Rollouts
from stratus.deploy.router import LiveEndpoint, Replica, ReplicaClient, Routes, TargetRuntime
from stratus.deploy.supervisor import Supervisor
from stratus.registry.records import VersionInfo

__all__ = ["Controller", "Plan", "Recorder"]

log = logging.getLogger(__name__)


class Followed(Protocol):
    """Endpoints as the controlling server published them (deploy/follow.py), for a server without control."""

    def get(self, project: str, name: str) -> LiveEndpoint | None: ...

    def names(self, project: str) -> list[str]: ...


class Controller:
    def __init__(
        self,
        placement: Placement,
        recorder: Recorder,
        metrics: DeployMetrics,
        entries_for: Callable[[str, VersionInfo], dict[str, bytes]],
        tick_s: float = 0.1,
        clock: Clock | None = None,
        ready: ReadyProbe | None = None,
        healthy: HealthProbe | None = None,
    ) -> None:
        self._recorder = recorder
        self.metrics = metrics
        self._entries_for = entries_for
        self._tick_s = tick_s
        self._clock = clock or MonotonicClock()
        self._probes = HttpProbes()
        self.replicas = ReplicaSet(placement, self._clock, ready or self._probes.ready, healthy or self._probes.healthy)
        self._stop = threading.Event()
        self.rollouts = Rollouts(
            self.replicas, recorder, metrics, self._clock, self._stop, self._new_target, self._open_endpoint
        )
        self.supervisor = Supervisor(self.replicas, metrics, self._clock)
        self.autoscaler = Autoscaler(self.replicas, self._clock)
        self._client = ReplicaClient()
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, str], Slot] = {}
        self._thread = threading.Thread(target=self._run, name="stratus-endpoints", daemon=True)
        metrics.watch(self._replica_rows)
        #: Whether this server controls the endpoints (deploy/lease.py): always on one server; on a shared DB, only
        #: the lease holder rolls out, supervises and scales. Set by the platform.
        self.in_control: Callable[[], bool] = lambda: True
        #: Without control, the data plane routes through what the holder published (set by the platform).
        self.followed: Followed | None = None

    # -- what the data plane and the service call ---------------------------------------------------------

    def find(self, name: str) -> LiveEndpoint | None:
        return self.get(tenancy.current_project(), name)

    def names(self) -> list[str]:
        project = tenancy.current_project()
        if self.followed is not None and not self.in_control():
            return self.followed.names(project)
        return sorted(s.key[1] for s in list(self._slots.values()) if s.key[0] == project and s.live is not None)

    def get(self, project: str, name: str) -> LiveEndpoint | None:
        slot = self._slots.get((project, name))
        live = slot.live if slot is not None else None
        # Without control, or having just taken it and not yet live here: the routes the holder published (the
        # platform clears them a while after a takeover), so requests keep going to replicas that still answer.
        if live is None and self.followed is not None:
            return self.followed.get(project, name)
        return live

    def live_endpoints(self) -> list[LiveEndpoint]:
        """Every endpoint this controller serves now (what the holder publishes for the other servers)."""
        return [s.live for s in list(self._slots.values()) if s.live is not None]

    def open_remote(self, project: str, name: str, routes: Routes, sticky_header: str | None) -> LiveEndpoint:
        """An endpoint over replicas another server runs, with this server's router client and metrics."""
        return LiveEndpoint(project, name, routes, sticky_header, self._client, self.metrics)

    def start(self) -> None:
        self._thread.start()

    def apply(self, plan: Plan, wait: bool = False) -> threading.Thread:
        """Roll the endpoint to ``plan`` on a background thread (one rollout at a time per endpoint)."""
        with self._lock:
            slot = self._slots.setdefault(plan.key, Slot(plan.key))
        thread = threading.Thread(
            target=self.rollouts.run, args=(slot, plan), name=f"stratus-rollout-{plan.name}", daemon=True
        )
        thread.start()
        if wait:
            thread.join()
        return thread

    def endpoint_keys(self) -> list[tuple[str, str]]:
        """(project, name) of every endpoint this controller runs."""
        return [key for key, slot in list(self._slots.items()) if slot.plan is not None]

    def stand_down(self) -> None:
        """This server lost endpoint control (another server holds the lease): stop its replicas and forget its
        endpoints, so only the new holder's replicas and decisions remain."""
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
        # Replicas that outlive their server (Ray's detached actors) are left to the new holder, which adopts them
        # (killing them would fail requests in flight on the other servers); others are stopped here.
        release = getattr(self.replicas.placement, "release_all", None)
        for slot in slots:
            live, slot.live, slot.plan = slot.live, None, None
            if live is not None:
                targets = [*live.routes.targets, *live.routes.shadows]
                for target in targets:
                    self.autoscaler.forget(target)
                if release is None:
                    self.replicas.kill_all(targets)
        if release is not None:
            release()

    def remove(self, project: str, name: str) -> None:
        slot = self._slots.get((project, name))
        if slot is None:
            return
        live, slot.live, slot.plan = slot.live, None, None
        if live is not None:
            for target in [*live.routes.targets, *live.routes.shadows]:
                self.replicas.retire(target)
                self.autoscaler.forget(target)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            if slot.live is not None:
                self.replicas.kill_all([*slot.live.routes.targets, *slot.live.routes.shadows])
        self.replicas.placement.close()
        self._probes.close()

    def status(self, project: str, name: str) -> dict[str, object] | None:
        slot = self._slots.get((project, name))
        live = slot.live if slot is not None else None
        if live is None:  # on a server without control: what it routes through (the holder's published routes)
            live = self.get(project, name)
        if live is None:
            return None
        routes = live.routes
        return {
            "revision": live.revision,
            "rolling_out": slot.rolling if slot is not None else False,
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

    # -- what the rollouts call --------------------------------------------------------------------------

    def _new_target(self, plan: Plan, version: VersionInfo) -> TargetRuntime:
        target = TargetRuntime(version, self._entries_for(plan.project, version))
        target.demand = lambda: self._demand(plan.key, target)
        return target

    def _open_endpoint(self, plan: Plan, routes: Routes) -> LiveEndpoint:
        return LiveEndpoint(plan.project, plan.name, routes, plan.sticky_header, self._client, self.metrics)

    # -- scale from zero, the supervisor's tick ------------------------------------------------------------

    def _demand(self, key: tuple[str, str], target: TargetRuntime) -> None:
        """A request found no ready replica: when the target is at zero, start one (scale from zero)."""
        slot = self._slots.get(key)
        plan = slot.plan if slot is not None else None
        if plan is None or not self.replicas.reserve(target):
            return
        asked = self._clock.now()

        def started(replica: Replica | None) -> None:
            if replica is None:
                return
            seconds = self._clock.now() - asked
            self.metrics.cold_started(plan.key, seconds)
            self.metrics.scaled(plan.key, target.label, "up")
            self.autoscaler.scaled(target)
            self.rollouts.report(plan)(
                "scaled_from_zero",
                {"target": target.label, "replicas": 1, "cold_start_seconds": round(seconds, 3)},
            )

        self.replicas.launch_async(target, self.rollouts.report(plan), started, counted=True)

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            try:
                if not self.in_control():
                    if self._slots:  # the lease ran out before this server heard it lost it
                        self.stand_down()
                    continue
                self.tick()
            except Exception:
                log.exception("endpoint supervisor tick failed")

    def tick(self) -> None:
        """One round of the supervisor over every target, and of the autoscaler over the routed targets of
        endpoints not rolling out."""
        probe_health = self.supervisor.health_due()
        for slot in list(self._slots.values()):
            live, plan = slot.live, slot.plan
            if live is None or plan is None:
                continue
            routes = live.routes
            report = self.rollouts.report(plan)
            for target in [*routes.targets, *routes.shadows]:
                self.supervisor.check(plan.key, target, report, probe_health)
            if slot.rolling:
                continue
            for target, share in zip(routes.targets, routes.shares, strict=True):
                if share > 0:
                    self.autoscaler.step(target, plan.scaling, report, self._scaled(plan, report))

    def _scaled(self, plan: Plan, report: Report) -> ScaleListener:
        def changed(target: TargetRuntime, current: int, wanted: int) -> None:
            direction = "up" if wanted > current else "down"
            self.metrics.scaled(plan.key, target.label, direction)
            kind = "scaled_to_zero" if wanted == 0 else f"scale_{direction}"
            report(kind, {"target": target.label, "from": current, "to": wanted})

        return changed

    def _replica_rows(self) -> list[tuple[str, str, str, str, int]]:
        rows = []
        for slot in list(self._slots.values()):
            if slot.live is None:
                continue
            routes = slot.live.routes
            for target in [*routes.targets, *routes.shadows]:
                counts: dict[str, int] = {"ready": 0, "starting": 0}
                for replica in list(target.replicas):
                    counts[replica.state] = counts.get(replica.state, 0) + 1
                rows += [(*slot.key, target.label, state, n) for state, n in counts.items()]
        return rows
