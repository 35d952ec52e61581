"""Alert rules and their evaluation, as pure data and functions (no DB, no clock, no network).

A rule watches one metric of one model or endpoint ("p99 > 200 ms for 5 min"). Each evaluation hands
``step`` the rule's condition, its state and the metric's value now; ``step`` returns the next state and the
transition to announce, if any. The states are Prometheus's: ``inactive`` -> ``pending`` (the condition holds,
not yet for the rule's duration) -> ``firing``; a firing rule whose condition stops holding is ``resolved``
and inactive again. A pending rule whose condition stops holding goes back to inactive without a word.

No value (no traffic in the window, no drift computed yet) never fires a rule and resolves a firing one:
a latency alert ends when the load that caused it stops.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Literal

from stratus.errors import InvalidInput

Metric = Literal["error_rate", "p99_ms", "drift_share", "log_dropped"]
Op = Literal[">", ">=", "<", "<="]
State = Literal["inactive", "pending", "firing"]
Transition = Literal["firing", "resolved"]
TargetKind = Literal["model", "endpoint"]

METRICS: dict[str, str] = {
    "error_rate": "failed requests / all requests in the window (0-1)",
    "p99_ms": "99th percentile of request latency in the window, milliseconds",
    "drift_share": "share of the model's features that drift (0-1)",
    "log_dropped": "inference log records dropped in the window (queue full)",
}
OPS: tuple[Op, ...] = (">", ">=", "<", "<=")
#: A week: a longer "for" is a typo, and the durations are stored as seconds in a float.
MAX_FOR_SECONDS = 7 * 24 * 3600.0
MAX_THRESHOLD = 1e12


@dataclass(frozen=True)
class Condition:
    metric: Metric
    op: Op
    threshold: float
    for_seconds: float = 0.0

    def holds(self, value: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        if self.op == ">":
            return value > self.threshold
        if self.op == ">=":
            return value >= self.threshold
        if self.op == "<":
            return value < self.threshold
        return value <= self.threshold

    def describe(self) -> str:
        unit = " ms" if self.metric == "p99_ms" else ""
        text = f"{self.metric} {self.op} {self.threshold:g}{unit}"
        return f"{text} for {format_duration(self.for_seconds)}" if self.for_seconds else text


@dataclass(frozen=True)
class AlertState:
    state: State = "inactive"
    #: When the condition began to hold (the clock's seconds); None while inactive.
    active_since: float | None = None
    #: When the rule last fired (for the resolve message); None if it is not firing.
    fired_at: float | None = None


def step(
    condition: Condition, current: AlertState, value: float | None, now: float
) -> tuple[AlertState, Transition | None]:
    """The rule's next state after an evaluation at ``now`` that saw ``value``, and what to announce."""
    if not condition.holds(value):
        if current.state == "firing":
            return AlertState(), "resolved"
        return AlertState(), None
    since = current.active_since if current.active_since is not None else now
    if current.state == "firing":
        return current, None
    if now - since >= condition.for_seconds:
        return AlertState("firing", since, now), "firing"
    return replace(current, state="pending", active_since=since), None


def check_condition(metric: str, op: str, threshold: float, for_seconds: float) -> Condition:
    if metric not in METRICS:
        raise InvalidInput(f"unknown alert metric {metric!r}: expected one of {', '.join(METRICS)}")
    if op not in OPS:
        raise InvalidInput(f"unknown comparison {op!r}: expected one of {' '.join(OPS)}")
    if not math.isfinite(threshold) or abs(threshold) > MAX_THRESHOLD:
        raise InvalidInput(f"the threshold must be a finite number of at most {MAX_THRESHOLD:g}")
    if not math.isfinite(for_seconds) or not 0 <= for_seconds <= MAX_FOR_SECONDS:
        raise InvalidInput(f"'for' must be 0 to {MAX_FOR_SECONDS:g} seconds")
    return Condition(metric, op, float(threshold), float(for_seconds))  # type: ignore[arg-type]


# -- the CLI's short form: "p99 > 200ms for 5m" ------------------------------------------------------------

_ALIASES = {
    "p99": "p99_ms",
    "latency": "p99_ms",
    "errors": "error_rate",
    "drift": "drift_share",
    "dropped": "log_dropped",
}
_EXPRESSION = re.compile(
    r"^\s*(?P<metric>[a-z_0-9]+)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*"
    r"(?P<unit>ms|s|%)?\s*(?:for\s+(?P<for>[0-9]*\.?[0-9]+\s*(?:ms|s|m|min|h)?))?\s*$",
    re.IGNORECASE,
)
_SECONDS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|min|h)?\s*", text, re.IGNORECASE)
    if match is None:
        raise InvalidInput(f"{text!r} is not a duration such as 30s, 5m or 1h")
    return float(match.group(1)) * _SECONDS[(match.group(2) or "").lower()]


def format_duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def parse_condition(text: str) -> Condition:
    """``p99 > 200ms for 5m``, ``error_rate > 5%``, ``drift_share >= 0.5 for 1h``."""
    match = _EXPRESSION.fullmatch(text)
    if match is None:
        raise InvalidInput(
            f"cannot read the condition {text!r}: write METRIC OP VALUE, then optionally 'for' DURATION, "
            "e.g. 'p99 > 200ms for 5m'"
        )
    metric = _ALIASES.get(match["metric"].lower(), match["metric"].lower())
    value = float(match["value"])
    unit = (match["unit"] or "").lower()
    if unit == "%":
        value /= 100.0
    elif unit in ("ms", "s"):
        if metric != "p99_ms":
            raise InvalidInput(f"a time unit belongs to latency (p99), not to {metric}")
        value *= 1000.0 if unit == "s" else 1.0
    return check_condition(metric, match["op"], value, parse_duration(match["for"]) if match["for"] else 0.0)
