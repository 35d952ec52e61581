"""Rollouts: move an endpoint from its routing table to a new revision's.

Two ways, named for what they do. The blue/green swap (the ``rolling`` rollout of the API) starts the new
revision's replicas beside the old ones and, once all are ready, replaces the routing table in one
assignment, then drains the old replicas. The canary moves traffic in steps (``blend``) and judges the new
targets after each (``judge_canary``, a pure function of their request windows); a failed judgement puts
the old table back. Either way, traffic only moves to replicas that are ready.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from stratus.deploy.clock import Clock
from stratus.deploy.metrics import DeployMetrics
from stratus.deploy.plan import Plan, Recorder, Slot
from stratus.deploy.replicaset import ReplicaSet, Report
from stratus.deploy.router import LiveEndpoint, Routes, TargetRuntime
from stratus.deploy.spec import CanarySpec
from stratus.registry.records import VersionInfo

log = logging.getLogger(__name__)

#: How often a canary step judges its window (a failure is seen within this, not at the step's end).
JUDGE_EVERY_S = 0.2
#: Below this many requests a p99 is noise, and not judged.
P99_MIN_REQUESTS = 20

#: One canary target's window: (label, requests, failed, p99 seconds).
CanaryWindow = tuple[str, int, int, float]


class Stopping(Exception):
    """The controller is closing: the rollout ends without a verdict (a restart fails it in recovery)."""


def shares(weights: Sequence[int]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights]


def blend(old: Routes, new: Routes, share: float) -> Routes:
    """The routing table with ``share`` of the traffic on ``new``'s targets and the rest on ``old``'s (a
    target in both gets both parts); ``new``'s shadows."""
    merged: dict[TargetRuntime, float] = {}
    for routes, weight in ((old, 1 - share), (new, share)):
        for target, part in zip(routes.targets, routes.shares, strict=True):
            merged[target] = merged.get(target, 0.0) + part * weight
    return Routes(list(merged), list(merged.values()), new.shadows)


def judge_canary(spec: CanarySpec, windows: Sequence[CanaryWindow]) -> str:
    """Why the canary fails (its first target over the error rate or the p99 budget), or "" if it passes."""
    for label, count, failed, p99 in windows:
        if count and failed / count > spec.max_error_rate:
            return f"{label}: error rate {failed / count:.1%} over {count} requests > {spec.max_error_rate:.1%}"
        if spec.max_p99_ms is not None and count >= P99_MIN_REQUESTS and p99 * 1000 > spec.max_p99_ms:
            return f"{label}: p99 latency {p99 * 1000:.0f} ms > {spec.max_p99_ms:.0f} ms"
    return ""


class Rollouts:
    def __init__(
        self,
        replicas: ReplicaSet,
        recorder: Recorder,
        metrics: DeployMetrics,
        clock: Clock,
        stop: threading.Event,
        new_target: Callable[[Plan, VersionInfo], TargetRuntime],
        open_endpoint: Callable[[Plan, Routes], LiveEndpoint],
    ) -> None:
        self._replicas = replicas
        self._recorder = recorder
        self._metrics = metrics
        self._clock = clock
        self._stop = stop
        self._new_target = new_target
        self._open_endpoint = open_endpoint

    def report(self, plan: Plan) -> Report:
        return lambda kind, detail: self._recorder.event(plan.endpoint_id, kind, plan.revision, detail)

    def run(self, slot: Slot, plan: Plan) -> None:
        """Roll ``slot`` to ``plan`` (one rollout at a time per endpoint); a rollout that breaks leaves the
        old revision serving."""
        with slot.lock:
            slot.rolling = True
            try:
                self._roll(slot, plan)
            except Stopping:
                return
            except Exception as exc:
                log.exception("rollout of endpoint %s revision %d failed", plan.name, plan.revision)
                self._recorder.revision_done(plan.endpoint_id, plan.revision, "failed", f"rollout failed: {exc}")
            finally:
                slot.rolling = False

    def _roll(self, slot: Slot, plan: Plan) -> None:
        live, previous_plan = slot.live, slot.plan
        old = live.routes if live is not None else None
        running = {t.version.id: t for t in ([*old.targets, *old.shadows] if old else [])}
        targets = [running.get(v.id) or self._new_target(plan, v) for v, _ in plan.targets]
        shadows = [running.get(v.id) or self._new_target(plan, v) for v in plan.shadows]
        fresh = [t for t in [*targets, *shadows] if t.version.id not in running]
        new_routes = Routes(targets, shares([w for _, w in plan.targets]), shadows)
        report = self.report(plan)
        report("rollout_started", {"mode": plan.rollout, "new": [t.label for t in fresh]})
        if live is None:  # a new endpoint answers at once; its first requests wait for the replicas
            live = self._open_endpoint(plan, new_routes)
            slot.live, slot.plan = live, plan
        wanted = [(t, max(1, plan.scaling.min_replicas)) for t in targets] + [(t, 1) for t in shadows]
        if not self._replicas.bring_up(wanted, report):
            for target in fresh:
                self._replicas.retire(target)
            if old is None and slot.live is live:
                slot.live, slot.plan = None, None
            self._recorder.revision_done(
                plan.endpoint_id, plan.revision, "failed", "new replicas did not become ready; traffic was not moved"
            )
            return
        slot.plan = plan
        canary_targets = [t for t in targets if t.version.id not in running]
        if plan.rollout == "canary" and old is not None and canary_targets:
            failure = self._canary(plan, live, old, new_routes, canary_targets)
            if failure:
                live.routes = old
                if previous_plan is not None:
                    slot.plan = previous_plan  # the old revision's scaling applies again
                for target in fresh:
                    self._replicas.retire(target)
                self._metrics.rolled_back(plan.key)
                report("rolled_back", {"reason": failure})
                self._recorder.revision_done(plan.endpoint_id, plan.revision, "rolled_back", failure)
                return
        if slot.live is not live:  # deleted while it rolled out
            if slot.plan is plan:
                slot.plan = None  # nothing of it serves: no request may start a replica for it
            for target in fresh:
                self._replicas.retire(target)
            return
        self._swap(plan, live, new_routes, list(running.values()))

    def _swap(self, plan: Plan, live: LiveEndpoint, routes: Routes, running: list[TargetRuntime]) -> None:
        """Blue/green: the whole table in one assignment (the event loop sees the old or the new one, never
        a mix), then drain what the new table no longer routes to."""
        live.routes = routes
        live.sticky_header = plan.sticky_header
        live.revision = plan.revision
        self.report(plan)("traffic_shifted", {"percent": 100})
        kept = {*routes.targets, *routes.shadows}
        for target in running:
            if target not in kept:
                self._replicas.retire(target)
        self._recorder.revision_done(plan.endpoint_id, plan.revision, "live", "")

    def _canary(self, plan: Plan, live: LiveEndpoint, old: Routes, new: Routes, watched: list[TargetRuntime]) -> str:
        """Move traffic in steps; return why it failed, or "" when every step passed."""
        spec = plan.canary
        for step in spec.steps[:-1]:
            live.routes = blend(old, new, step / 100)
            self.report(plan)("traffic_shifted", {"percent": step})
            began = self._clock.now()
            while self._clock.now() - began < spec.step_seconds:
                if self._clock.wait(self._stop, min(JUDGE_EVERY_S, spec.step_seconds)):
                    raise Stopping
                failure = judge_canary(spec, [(t.label, *t.window(began)) for t in watched])
                if failure:
                    return failure
        return ""
