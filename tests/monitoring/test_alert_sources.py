"""Alert rules over the real metrics history on a fake clock: a p99 rise fires at the first evaluation after
the 10 s interval it happened in closes (one evaluation interval), errors fire an error-rate rule, and the
rule resolves at the first closed interval without requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stratus.dataplane import InferenceEvent
from stratus.monitoring.alerts_service import AlertService
from stratus.monitoring.alerts_sources import HISTORY_RESOLUTION_S, AlertMetrics, drift_window
from stratus.monitoring.history import MetricsHistory
from stratus.monitoring.webhooks_delivery import WebhookSender
from stratus.security.audit import AuditLog
from stratus.security.encryption import Keyring
from stratus.security.outbound import OutboundPolicy
from stratus.store import Database
from stratus.tenancy import Caller

START = 1_800_000_000.0  # on the history's 10 s grid


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Clock, MetricsHistory, AlertService]]:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate()
    clock = Clock()
    history = MetricsHistory(db, clock=clock)
    policy = OutboundPolicy()
    alerts = AlertService(
        db,
        Keyring.generate(),
        AuditLog(db),
        policy,
        WebhookSender(db, policy, attempts=1, backoff_s=0, timeout_s=1),
        interval_s=HISTORY_RESOLUTION_S,
        min_window_s=HISTORY_RESOLUTION_S,
        source=AlertMetrics(history, None, drift_window(300)),
        clock=clock,
    )
    closed: list[float] = []
    history.closed_listeners.append(closed.append)
    yield clock, history, alerts
    assert closed  # the history told its listeners of every interval it closed
    db.dispose()


def serve(history: MetricsHistory, clock: Clock, seconds: float, status: int = 200, count: int = 20) -> None:
    for _ in range(count):
        history.observe(InferenceEvent(clock.now, Caller(), "slowmodel", 1, "", "v2", seconds, status, "", 1, {}, None))


def close_interval(clock: Clock, history: MetricsHistory, alerts: AlertService) -> list[tuple[str, str, str]]:
    """Advance to the next 10 s boundary, close the interval there and evaluate, as the server's loop does."""
    clock.now += HISTORY_RESOLUTION_S
    history.tick()
    return alerts.evaluate()  # type: ignore[return-value]


def test_a_p99_rise_fires_at_the_close_of_its_interval_and_resolves_when_load_stops(
    world: tuple[Clock, MetricsHistory, AlertService],
) -> None:
    clock, history, alerts = world
    alerts.create({"name": "slow", "target": "slowmodel", "metric": "p99_ms", "threshold": 200.0})
    clock.now += 1
    serve(history, clock, 0.005)  # fast: 5 ms
    assert close_interval(clock, history, alerts) == []
    clock.now += 3  # the rise, 3 s into an interval
    rise = clock.now
    serve(history, clock, 0.35)
    fired = close_interval(clock, history, alerts)
    assert fired == [("default", "slow", "firing")]
    # Fired at the first evaluation after the rise: within one evaluation interval of it.
    assert clock.now - rise <= HISTORY_RESOLUTION_S
    assert alerts.get("slow")["value"] > 200.0
    clock.now += 2
    serve(history, clock, 0.4)  # still slow: stays firing, nothing announced again
    assert close_interval(clock, history, alerts) == []
    # The load stops: the next closed interval has no requests, so no p99, and the rule resolves.
    assert close_interval(clock, history, alerts) == [("default", "slow", "resolved")]


def test_errors_fire_an_error_rate_rule_and_the_duration_counts_intervals(
    world: tuple[Clock, MetricsHistory, AlertService],
) -> None:
    clock, history, alerts = world
    alerts.create(
        {"name": "errors", "target": "slowmodel", "metric": "error_rate", "threshold": 0.2, "for_seconds": 20.0}
    )
    transitions = []
    for _ in range(4):
        clock.now += 1
        serve(history, clock, 0.002, count=6)
        serve(history, clock, 0.002, status=500, count=4)  # 40% errors
        transitions.append(close_interval(clock, history, alerts))
    # pending at the first close, held 10 s at the second, 20 s (the rule's duration) at the third: fires.
    assert transitions == [[], [], [("default", "errors", "firing")], []]
    assert alerts.get("errors")["value"] == pytest.approx(0.4)


def test_a_rule_on_another_model_or_project_sees_nothing(world: tuple[Clock, MetricsHistory, AlertService]) -> None:
    clock, history, alerts = world
    alerts.create({"name": "other", "target": "othermodel", "metric": "p99_ms", "threshold": 1.0})
    clock.now += 1
    serve(history, clock, 0.5)
    assert close_interval(clock, history, alerts) == []
    assert alerts.get("other")["value"] is None
