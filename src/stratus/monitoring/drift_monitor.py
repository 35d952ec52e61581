"""The periodic drift computation: every ``interval_s``, drift of each model and endpoint whose inference log
captures payloads, as its project, over the default window. Each report is stored (the time series a chart
draws and alert rules on drift share read) and published as gauges; a target without a reference or without
enough logged rows is skipped quietly, since that is its normal state until someone uploads one or sends
traffic."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select

from stratus import tenancy
from stratus.errors import StratusError
from stratus.monitoring.drift_service import DriftService
from stratus.store import Database
from stratus.store.tables import LogSetting

log = logging.getLogger(__name__)


class DriftMonitor:
    def __init__(self, db: Database, drift: DriftService, *, interval_s: float) -> None:
        self.db = db
        self.drift = drift
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def targets(self) -> list[tuple[str, str, str]]:
        """(project, scope, name) of every model and endpoint logged with payloads."""
        with self.db.read() as s:
            rows = s.execute(
                select(LogSetting.project, LogSetting.scope, LogSetting.name).where(
                    LogSetting.payloads.is_(True), LogSetting.mode != "off"
                )
            ).all()
        return sorted((str(p), str(scope), str(n)) for p, scope, n in rows)

    def run_once(self) -> int:
        """Compute every target's drift once; returns how many reports were stored."""
        stored = 0
        for project, scope, name in self.targets():
            if self._stop.is_set():
                break
            with tenancy.acting_as(tenancy.Caller(project=project)):
                try:
                    if scope == "endpoint":
                        reports = self.drift.endpoint_report(name)["reports"]
                    else:
                        reports = [self.drift.model_report(name)]
                except StratusError as exc:  # no reference, the model deleted, a bad logged tensor
                    log.debug("drift of %s %s/%s skipped: %s", scope, project, name, exc)
                    continue
                except Exception:  # never let one target end the loop
                    log.exception("drift of %s %s/%s failed", scope, project, name)
                    continue
            stored += sum(1 for r in reports if r.get("status") == "ok")
        return stored

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:  # the DB briefly unavailable: try again next interval
                log.exception("the periodic drift computation failed")

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="stratus-drift", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
