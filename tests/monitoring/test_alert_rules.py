"""The alert state machine on a fake clock, and the rule's short form the CLI reads."""

from __future__ import annotations

import math

import pytest

from stratus.errors import InvalidInput
from stratus.monitoring.alerts import AlertState, Condition, parse_condition, step


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def run(
    condition: Condition, values: list[float | None], clock: FakeClock, every: float
) -> list[tuple[str, str | None]]:
    """Evaluate ``values`` one per ``every`` seconds; returns (state, transition) after each."""
    state, seen = AlertState(), []
    for value in values:
        state, transition = step(condition, state, value, clock.advance(every))
        seen.append((state.state, transition))
    return seen


def test_p99_above_for_five_minutes_goes_pending_then_fires_then_resolves() -> None:
    rule = Condition("p99_ms", ">", 200.0, for_seconds=300.0)
    clock = FakeClock()
    # One evaluation a minute: 150 ms, then 250 ms for six minutes, then back to 100 ms.
    seen = run(rule, [150.0, 250, 250, 250, 250, 250, 250, 100], clock, every=60.0)
    assert seen == [
        ("inactive", None),
        ("pending", None),  # t=0 of the condition
        ("pending", None),  # 60 s
        ("pending", None),  # 120 s
        ("pending", None),  # 180 s
        ("pending", None),  # 240 s
        ("firing", "firing"),  # 300 s: held for the whole duration
        ("inactive", "resolved"),
    ]


def test_a_dip_below_the_threshold_restarts_the_duration_without_a_word() -> None:
    rule = Condition("error_rate", ">", 0.05, for_seconds=120.0)
    clock = FakeClock()
    seen = run(rule, [0.1, 0.1, 0.01, 0.1, 0.1, 0.1], clock, every=60.0)
    assert [t for _, t in seen] == [None, None, None, None, None, "firing"]
    assert seen[2] == ("inactive", None)


def test_no_duration_fires_at_the_first_evaluation_that_sees_the_rise() -> None:
    rule = Condition("p99_ms", ">", 200.0)
    state, transition = step(rule, AlertState(), 350.0, 10.0)
    assert transition == "firing" and state.state == "firing" and state.fired_at == 10.0
    # Still above: stays firing, announces nothing again.
    again, transition = step(rule, state, 400.0, 11.0)
    assert transition is None and again == state


def test_no_value_never_fires_and_resolves_a_firing_rule() -> None:
    rule = Condition("p99_ms", ">", 200.0)
    assert step(rule, AlertState(), None, 1.0) == (AlertState(), None)
    assert step(rule, AlertState(), math.nan, 1.0) == (AlertState(), None)
    firing = AlertState("firing", 0.0, 0.0)
    assert step(rule, firing, None, 5.0) == (AlertState(), "resolved")


@pytest.mark.parametrize(
    ("op", "value", "holds"),
    [(">", 1.0, False), (">=", 1.0, True), ("<", 0.5, True), ("<=", 1.0, True), ("<", 1.0, False)],
)
def test_comparisons(op: str, value: float, holds: bool) -> None:
    assert Condition("drift_share", op, 1.0).holds(value) is holds  # type: ignore[arg-type]


def test_a_state_restored_from_storage_keeps_its_start() -> None:
    """A server that restarts mid-duration fires when the original duration is over, not a full one later."""
    rule = Condition("p99_ms", ">", 200.0, for_seconds=300.0)
    restored = AlertState("pending", active_since=1000.0)
    assert step(rule, restored, 250.0, 1299.0)[1] is None
    assert step(rule, restored, 250.0, 1300.0)[1] == "firing"


def test_the_short_form() -> None:
    assert parse_condition("p99 > 200ms for 5m") == Condition("p99_ms", ">", 200.0, 300.0)
    assert parse_condition("p99_ms >= 1.5s") == Condition("p99_ms", ">=", 1500.0, 0.0)
    assert parse_condition("error_rate > 5%") == Condition("error_rate", ">", 0.05, 0.0)
    assert parse_condition("drift_share>=0.5 for 1h") == Condition("drift_share", ">=", 0.5, 3600.0)
    assert parse_condition("log_dropped > 0 for 30s") == Condition("log_dropped", ">", 0.0, 30.0)
    assert Condition("p99_ms", ">", 200.0, 300.0).describe() == "p99_ms > 200 ms for 5m"


@pytest.mark.parametrize(
    "text",
    ["p99 200", "cpu > 5", "error_rate > 5ms", "p99 > 200 for ever", "p99 > 200 for 9999h", "p99 ~ 1", ""],
)
def test_the_short_form_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_condition(text)
