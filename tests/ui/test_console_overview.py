"""The overview's traffic figure: a project's requests and errors over every model, from the metrics history
(one grouped query), with the history on its own (a DB, a clock given by the test)."""

from __future__ import annotations

from pathlib import Path

from stratus.dataplane import InferenceEvent
from stratus.monitoring.history import FINE, MetricsHistory
from stratus.store import Database
from stratus.tenancy import Caller

T0 = 1_800_000_000.0


def test_project_traffic_sums_every_model_of_the_project_only(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'h.db'}")
    db.migrate()
    try:
        now = [T0]
        history = MetricsHistory(db, clock=lambda: now[0])

        def served(project: str, model: str, status: int = 200, endpoint: str = "") -> None:
            caller = Caller(project, "k")
            history.observe(InferenceEvent(T0, caller, model, 1, endpoint, "v2", 0.01, status, "", 1, {}, {}))

        for _ in range(5):
            served("default", "iris")
        for _ in range(3):
            served("default", "digits")
        served("default", "digits", status=500)
        served("default", "iris", endpoint="flowers")  # an endpoint's request counts once, on its model
        for _ in range(7):
            served("tenant-b", "iris")
        now[0] = T0 + FINE
        history.tick()
        assert history.project_traffic("default", T0, T0 + 120, 60) == [(T0, 10, 1), (T0 + 60, 0, 0)]
        assert history.project_traffic("tenant-b", T0, T0 + 60, 60) == [(T0, 7, 0)]
        assert history.project_traffic("nobody", T0, T0 + 60, 60) == [(T0, 0, 0)]
    finally:
        db.dispose()
