"""Where alert rules read their metrics: the metrics history (error rate, p99, the log's drops) and drift.

The history answers over closed 10 s intervals; the alert loop runs right after each close
(MetricsHistory.closed_listeners), so a rule judges the newest interval as soon as it can be read. Drift is
computed every few minutes, not every interval: a drift rule reads the newest drift share of a longer
window, so it does not resolve between two drift reports.
"""

from __future__ import annotations

from collections.abc import Callable

from stratus.monitoring.history import FINE, MetricsHistory

#: The history's resolution: the shortest window a rule can judge (a shorter one could fall between intervals).
HISTORY_RESOLUTION_S = FINE

#: (project, target kind, target, window seconds, now) -> the newest drift share in the window, or None.
DriftShare = Callable[[str, str, str, float, float], float | None]
#: Metrics the history computes under the same names the rules use.
HISTORY_METRICS = ("error_rate", "p99_ms", "log_dropped")


def drift_window(drift_interval_s: float) -> float:
    """How far back a drift rule looks for the newest report: two computation periods (one may be late), or a
    day when drift is computed only on request."""
    return max(2 * drift_interval_s, 3600.0) if drift_interval_s > 0 else 86_400.0


class AlertMetrics:
    """The platform's MetricSource (stratus.monitoring.alerts_service.MetricSource)."""

    def __init__(self, history: MetricsHistory | None, drift_share: DriftShare | None, drift_window_s: float) -> None:
        self.history = history
        self.drift_share = drift_share
        self.drift_window_s = drift_window_s

    def __call__(
        self, project: str, target_kind: str, target: str, metric: str, window_s: float, now: float
    ) -> float | None:
        if metric == "drift_share":
            if self.drift_share is None:
                return None
            return self.drift_share(project, target_kind, target, max(window_s, self.drift_window_s), now)
        if metric in HISTORY_METRICS and self.history is not None:
            return self.history.window(project, target_kind, target, metric, window_s)
        return None
