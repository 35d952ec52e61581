"""The controller's parts on a fake clock and a fake placement: the autoscaler's and the canary's decisions
(pure functions), the supervisor's verdicts, and the rollouts, replica set and scale from zero acting on
them. No process is started and no wall-clock wait is needed: a 30 s cooldown passes in one call."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import cast

import pytest
from prometheus_client import CollectorRegistry

from conftest import scaled
from stratus.deploy.autoscale import Autoscaler, Sample, scale_decision, trim
from stratus.deploy.clock import FakeClock
from stratus.deploy.controller import Controller
from stratus.deploy.metrics import DeployMetrics
from stratus.deploy.plan import Plan
from stratus.deploy.replicas import ReplicaProcess
from stratus.deploy.replicaset import ReplicaSet
from stratus.deploy.rollout import blend, judge_canary
from stratus.deploy.router import Replica, Routes, TargetRuntime
from stratus.deploy.spec import CanarySpec, ScalingSpec
from stratus.deploy.supervisor import HEALTH_FAILURES, Supervisor, replica_verdict
from stratus.registry.records import VersionInfo
from stratus.types import Signature, TensorSpec

# -- fakes -----------------------------------------------------------------------------------------------


class FakeProcess:
    def __init__(self, pid: int, ready: bool = True) -> None:
        self.url, self.token, self.pid = f"http://127.0.0.1:{pid}", "t", pid
        self.ready, self.healthy, self.running = ready, True, True
        self.stopped = self.killed = False

    def alive(self) -> bool:
        return self.running

    def stop(self, grace_s: float = 2.0) -> None:
        self.stopped, self.running = True, False

    def kill(self) -> None:
        self.killed, self.running = True, False


class FakePlacement:
    """Starts fake processes; ``fail_next`` makes the next ones never become ready."""

    def __init__(self) -> None:
        self.started: list[FakeProcess] = []
        self.fail_next = 0
        self.closed = False

    def start(self, entries: dict[str, bytes]) -> ReplicaProcess:
        process = FakeProcess(1000 + len(self.started), ready=self.fail_next == 0)
        self.fail_next = max(0, self.fail_next - 1)
        self.started.append(process)
        return process

    def close(self) -> None:
        self.closed = True


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, dict[str, object]]] = []
        self.done: list[tuple[int, str, str]] = []
        self.changed = threading.Condition()

    def event(self, endpoint_id: int, kind: str, revision: int | None, detail: dict[str, object]) -> None:
        with self.changed:
            self.events.append((kind, revision, detail))
            self.changed.notify_all()

    def revision_done(self, endpoint_id: int, revision: int, status: str, message: str) -> None:
        self.done.append((revision, status, message))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.events]

    def wait_for(self, kind: str) -> dict[str, object]:
        with self.changed:
            assert self.changed.wait_for(lambda: kind in self.kinds(), scaled(10)), self.kinds()
            return next(detail for k, _, detail in self.events if k == kind)


def _ready(process: ReplicaProcess) -> bool:
    return cast(FakeProcess, process).ready


def _healthy(process: ReplicaProcess) -> bool:
    return cast(FakeProcess, process).healthy


def version(number: int = 1) -> VersionInfo:
    signature = Signature((TensorSpec("x", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (-1, 3)),))
    return VersionInfo(
        number, "m", number, f"sha256:{number}", 0, "onnx", signature, {}, {}, {}, None, None, None, "", "active",
        "healthy", "", datetime(2026, 1, 1), (), {},
    )  # fmt: skip


def plan(revision: int, versions: list[int], rollout: str = "rolling", **scaling: float) -> Plan:
    return Plan(
        endpoint_id=1,
        project="default",
        name="ep",
        revision=revision,
        targets=[(version(n), 100) for n in versions],
        shadows=[],
        sticky_header=None,
        scaling=ScalingSpec(**scaling),  # type: ignore[arg-type]
        rollout=rollout,
        canary=CanarySpec(steps=[20, 50, 100], step_seconds=30, max_error_rate=0.05),
    )


def controller(clock: FakeClock, placement: FakePlacement, events: Events) -> Controller:
    return Controller(
        placement,
        events,
        DeployMetrics(CollectorRegistry()),
        lambda project, v: {},
        clock=clock,
        ready=_ready,
        healthy=_healthy,
    )


# -- the autoscaler's decision ---------------------------------------------------------------------------

SPEC = ScalingSpec(min_replicas=1, max_replicas=4, target_in_flight=2, scale_up_seconds=2, cooldown_seconds=30)


def steady(load: int, seconds: float, now: float = 100.0, every: float = 0.1) -> list[Sample]:
    count = int(seconds / every) + 1
    return [(now - seconds + i * every, load) for i in range(count)]


def test_sustained_pressure_adds_as_many_replicas_as_the_load_needs() -> None:
    assert scale_decision(steady(5, 2), SPEC, live=1, now=100, last_scale=-math.inf) == 3
    assert scale_decision(steady(3, 2), SPEC, live=1, now=100, last_scale=-math.inf) == 2
    assert scale_decision(steady(50, 2), SPEC, live=1, now=100, last_scale=-math.inf) == 4  # capped at max
    assert scale_decision(steady(50, 2), SPEC, live=4, now=100, last_scale=-math.inf) == 4


def test_no_scale_up_on_a_blip_or_right_after_a_change() -> None:
    assert scale_decision(steady(5, 0.5), SPEC, live=1, now=100, last_scale=-math.inf) == 1  # not sustained
    assert scale_decision(steady(5, 2), SPEC, live=1, now=100, last_scale=99) == 1  # changed 1 s ago
    assert scale_decision(steady(2, 2), SPEC, live=1, now=100, last_scale=-math.inf) == 1  # at, not above


def test_down_by_one_after_a_quiet_cooldown_with_a_margin() -> None:
    quiet = steady(1, 30)
    assert scale_decision(quiet, SPEC, live=3, now=100, last_scale=-math.inf) == 2
    assert scale_decision(quiet, SPEC, live=3, now=100, last_scale=80) == 3  # the cooldown is not over
    assert scale_decision(steady(1, 10), SPEC, live=3, now=100, last_scale=-math.inf) == 3  # not quiet long enough
    # 2.9 in flight: one replica fewer (2) could take 4, but not with the 70% margin (2.8): no flapping.
    assert scale_decision(steady(3, 30), SPEC, live=3, now=100, last_scale=-math.inf) == 3
    assert scale_decision(steady(0, 30), SPEC, live=1, now=100, last_scale=-math.inf) == 1  # min_replicas 1


def test_to_zero_only_when_allowed_idle_and_unrequested() -> None:
    spec = SPEC.model_copy(update={"min_replicas": 0})
    idle = steady(0, 30)
    assert scale_decision(idle, spec, live=1, now=100, last_scale=-math.inf, last_request=60) == 0
    assert scale_decision(idle, spec, live=1, now=100, last_scale=-math.inf, last_request=90) == 1  # a recent one
    busy = [*idle[:-1], (100.0, 1)]
    assert scale_decision(busy, spec, live=1, now=100, last_scale=-math.inf, last_request=60) == 1
    assert scale_decision(idle, spec, live=0, now=100, last_scale=-math.inf) == 0  # at zero: the router's call


def test_trim_keeps_the_longest_window() -> None:
    samples = deque(steady(1, 60))
    trim(samples, SPEC, 100.0)
    assert samples[0][0] >= 70.0 and samples[-1][0] == pytest.approx(100.0)


def test_a_burst_adds_a_replica_that_leaves_after_the_cooldown() -> None:
    """The e2e burst test's story on a fake clock: load above target adds one, a quiet cooldown removes it."""
    clock, placement = FakeClock(), FakePlacement()
    replicas = ReplicaSet(placement, clock, _ready, _healthy)
    scaler = Autoscaler(replicas, clock)
    target = TargetRuntime(version(), {})
    assert replicas.launch(target, lambda kind, detail: None) is not None
    spec = ScalingSpec(min_replicas=1, max_replicas=2, target_in_flight=2, scale_up_seconds=0.5, cooldown_seconds=3)
    changes: list[tuple[int, int]] = []

    def step() -> int:
        clock.advance(0.1)
        return scaler.step(target, spec, lambda kind, detail: None, lambda t, a, b: changes.append((a, b)))

    target.waiting = 6
    while not changes:
        step()
    assert changes == [(1, 2)]
    _wait(lambda: len(target.ready()) == 2)
    target.waiting = 0
    for _ in range(29):  # 2.9 s of quiet: not yet
        step()
    assert changes == [(1, 2)]
    for _ in range(10):
        step()
    assert changes == [(1, 2), (2, 1)]
    _wait(lambda: len(target.replicas) == 1)
    assert sum(p.stopped for p in placement.started) == 1


def _wait(condition: Callable[[], bool]) -> None:
    """Background starts and drains run on threads (real ones, with fake processes): wait for them."""
    done = threading.Event()
    deadline = scaled(10)
    waited = 0.0
    while not condition():
        assert waited < deadline, "condition not reached"
        done.wait(0.005)
        waited += 0.005


# -- the canary's judgement and steps --------------------------------------------------------------------


def test_judge_canary_reads_the_error_rate_and_p99_of_each_window() -> None:
    spec = CanarySpec(max_error_rate=0.05)
    assert "error rate 10.0% over 100 requests" in judge_canary(spec, [("m:2", 100, 10, 0.002)])
    assert judge_canary(CanarySpec(max_error_rate=0.2), [("m:2", 100, 10, 0.002)]) == ""
    assert "p99 latency 2 ms > 1 ms" in judge_canary(
        CanarySpec(max_error_rate=1, max_p99_ms=1), [("m:2", 100, 0, 0.002)]
    )
    assert judge_canary(CanarySpec(max_p99_ms=1), [("m:2", 19, 0, 0.5)]) == ""  # too few for a p99
    assert judge_canary(spec, [("m:2", 0, 0, 0.0)]) == ""  # nothing in the window
    assert judge_canary(spec, [("m:2", 10, 0, 0.0), ("m:3", 10, 1, 0.0)]).startswith("m:3")


def test_target_windows_feed_the_judge() -> None:
    target = TargetRuntime(version(), {})
    for i in range(100):
        target.outcomes.append((10.0 + i, i % 10 != 0, 0.002))
    assert "error rate 10.0%" in judge_canary(CanarySpec(), [(target.label, *target.window(10.0))])
    assert judge_canary(CanarySpec(), [(target.label, *target.window(200.0))]) == ""


def test_blend_moves_a_share_and_keeps_a_shared_target_whole() -> None:
    a, b, c = (TargetRuntime(version(n), {}) for n in (1, 2, 3))
    old, new = Routes([a, b], [0.5, 0.5]), Routes([b, c], [0.5, 0.5], [a])
    mixed = blend(old, new, 0.2)
    assert mixed.targets == [a, b, c] and mixed.shadows == [a]
    assert mixed.shares == pytest.approx([0.4, 0.5, 0.1])


class _FailingClock(FakeClock):
    """While a canary step waits, the new target's requests fail (stamped on this clock)."""

    def __init__(self, watched: Callable[[], list[TargetRuntime]]) -> None:
        super().__init__()
        self._watched = watched

    def wait(self, event: threading.Event, seconds: float) -> bool:
        for target in self._watched():
            target.outcomes.append((self.now(), False, 0.001))
        return super().wait(event, seconds)


def test_canary_steps_through_on_a_fake_clock_then_swaps() -> None:
    clock, placement, events = FakeClock(), FakePlacement(), Events()
    ctl = controller(clock, placement, events)
    try:
        ctl.apply(plan(1, [1]), wait=True)
        ctl.apply(plan(2, [2], rollout="canary"), wait=True)
        shifted = [d["percent"] for k, r, d in events.events if k == "traffic_shifted" and r == 2]
        assert shifted == [20, 50, 100]
        assert events.done == [(1, "live", ""), (2, "live", "")]
        live = ctl.get("default", "ep")
        assert live is not None and [t.version.version for t in live.routes.targets] == [2]
        assert placement.started[0].stopped and not placement.started[1].stopped  # v1 drained, v2 serves
    finally:
        ctl.close()
    assert placement.closed and placement.started[1].killed


class ReleasingPlacement(FakePlacement):
    """A placement whose replicas can outlive their server (as Ray's do): ``release_all`` lets them go."""

    def __init__(self) -> None:
        super().__init__()
        self.released = False

    def release_all(self) -> None:
        self.released = True


@pytest.mark.parametrize("placement", [FakePlacement(), ReleasingPlacement()], ids=["local", "outliving"])
def test_standing_down_before_close_leaves_outliving_replicas_to_the_next_holder(placement: FakePlacement) -> None:
    """What a server on a shared database does when it stops (Platform.close): its replicas that can outlive it
    are released for the next holder to adopt, not killed under the requests other servers send them."""
    ctl = controller(FakeClock(), placement, Events())
    ctl.apply(plan(1, [1]), wait=True)
    ctl.stand_down()
    ctl.close()
    releasing = isinstance(placement, ReleasingPlacement)
    assert placement.closed and (placement.released if releasing else True)
    assert placement.started[0].killed is not releasing


def test_a_failing_canary_rolls_back_to_the_old_table() -> None:
    placement, events = FakePlacement(), Events()
    holder: list[Controller] = []

    def watched() -> list[TargetRuntime]:
        live = holder[0].get("default", "ep") if holder else None
        return [t for t in live.routes.targets if t.version.version == 2] if live else []

    ctl = controller(_FailingClock(watched), placement, events)
    holder.append(ctl)
    try:
        ctl.apply(plan(1, [1]), wait=True)
        old = ctl.get("default", "ep")
        assert old is not None
        old_routes = old.routes
        ctl.apply(plan(2, [2], rollout="canary"), wait=True)
        assert events.done[-1][:2] == (2, "rolled_back") and "error rate 100.0%" in events.done[-1][2]
        assert old.routes is old_routes and old.revision == 1
        assert [d["percent"] for k, r, d in events.events if k == "traffic_shifted" and r == 2] == [20]
        assert placement.started[1].stopped and not placement.started[0].stopped  # the canary's replica left
        assert ctl.metrics.rollbacks.labels("ep", "default")._value.get() == 1
    finally:
        ctl.close()


def test_a_swap_whose_replicas_never_get_ready_moves_no_traffic() -> None:
    clock, placement, events = FakeClock(), FakePlacement(), Events()
    ctl = controller(clock, placement, events)
    try:
        ctl.apply(plan(1, [1]), wait=True)
        placement.fail_next = 1
        ctl.apply(plan(2, [2]), wait=True)
        assert events.done[-1][:2] == (2, "failed") and "replica_failed" in events.kinds()
        live = ctl.get("default", "ep")
        assert live is not None and live.revision == 1 and [t.version.version for t in live.routes.targets] == [1]
        ctl.remove("default", "ep")
        assert ctl.get("default", "ep") is None and placement.started[0].stopped
    finally:
        ctl.close()


# -- the supervisor and scale from zero ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "alive", "healthy", "failures", "verdict", "after"),
    [
        ("starting", False, None, 0, "skip", 0),
        ("draining", False, None, 0, "skip", 0),
        ("ready", True, None, 2, "keep", 2),
        ("ready", True, True, 2, "keep", 0),
        ("ready", True, False, 0, "keep", 1),
        ("ready", True, False, HEALTH_FAILURES - 1, "replace", HEALTH_FAILURES),
        ("ready", False, None, 0, "replace", 0),
        ("dead", True, None, 0, "replace", 0),
    ],
)
def test_replica_verdicts(
    state: str, alive: bool, healthy: bool | None, failures: int, verdict: str, after: int
) -> None:
    assert replica_verdict(state, alive, healthy, failures) == (verdict, after)


def test_the_supervisor_replaces_a_dead_replica_and_reports_it() -> None:
    clock, placement, events = FakeClock(), FakePlacement(), Events()
    replicas = ReplicaSet(placement, clock, _ready, _healthy)
    supervisor = Supervisor(replicas, DeployMetrics(CollectorRegistry()), clock)
    target = TargetRuntime(version(), {})
    report = lambda kind, detail: events.event(1, kind, 1, detail)  # noqa: E731
    first = replicas.launch(target, report)
    assert first is not None
    assert supervisor.check(("default", "ep"), target, report, probe_health=supervisor.health_due()) == 0
    placement.started[0].running = False  # kill -9
    assert supervisor.check(("default", "ep"), target, report, probe_health=False) == 1
    detail = events.wait_for("replica_restarted")
    assert detail["replaced"] == first.id and detail["pid"] == 1000 and detail["by"] == "r2"
    _wait(lambda: [r.state for r in target.replicas] == ["ready"])
    assert supervisor.health_due() is False  # checked a moment ago


def test_a_request_at_zero_starts_one_replica_however_many_ask() -> None:
    clock, placement, events = FakeClock(), FakePlacement(), Events()
    ctl = controller(clock, placement, events)
    try:
        ctl.apply(plan(1, [1], min_replicas=0), wait=True)
        live = ctl.get("default", "ep")
        assert live is not None
        target = live.routes.targets[0]
        for replica in list(target.replicas):
            ctl.replicas.remove_async(target, replica)
        _wait(lambda: not target.replicas)
        for _ in range(5):
            target.demand()
        detail = events.wait_for("scaled_from_zero")
        assert detail["replicas"] == 1
        _wait(lambda: len(target.ready()) == 1)
        assert len(placement.started) == 2  # the first rollout's, and one for all five requests
    finally:
        ctl.close()


def test_a_request_at_zero_is_woken_by_the_replica_it_started() -> None:
    """The router's wait for a replica is an event the replica set sets, across threads and loops."""
    clock, placement, events = FakeClock(), FakePlacement(), Events()
    ctl = controller(clock, placement, events)
    try:
        ctl.apply(plan(1, [1], min_replicas=0), wait=True)
        live = ctl.get("default", "ep")
        assert live is not None
        target = live.routes.targets[0]
        for replica in list(target.replicas):
            ctl.replicas.remove_async(target, replica)
        _wait(lambda: not target.replicas)

        async def first_request() -> Replica:
            return await asyncio.wait_for(live._replica(target, None), scaled(10))

        replica = asyncio.run(first_request())
        assert replica.state == "ready" and replica.process is placement.started[-1]
        assert events.wait_for("scaled_from_zero")["target"] == "m:1"
    finally:
        ctl.close()


def test_draining_waits_for_the_last_request_not_a_poll() -> None:
    clock, placement = FakeClock(), FakePlacement()
    replicas = ReplicaSet(placement, clock, _ready, _healthy)
    target = TargetRuntime(version(), {})
    replica = replicas.launch(target, lambda kind, detail: None)
    assert isinstance(replica, Replica)
    replica.outstanding = 1
    replica.state = "draining"
    replica.drained.set()  # what the router does when the last request ends
    replica.outstanding = 0
    replicas.drain(replica)
    assert replica.state == "stopped" and placement.started[0].stopped
