"""Usage metering, which pay-per-use billing rests on.

Each served request adds to counters in memory, keyed by (project, key, model, endpoint, kind): a dict
update under a lock, a few microseconds. A background thread writes the counters to ``usage_records``
every ``flush_seconds`` in one transaction through the store's single writer. ``close()`` flushes what is
left, so a clean shutdown loses nothing; a crash (kill -9, power loss) loses at most the counts of the
last flush interval. A flush that fails keeps its counts for the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from stratus.errors import InvalidInput
from stratus.store import Database
from stratus.store.tables import UsageRecord, utcnow

if TYPE_CHECKING:
    from stratus.settings import Settings

log = logging.getLogger(__name__)

GROUPS = ("project", "key", "model", "endpoint", "kind", "day", "month")
_FIELDS = ("requests", "items", "tokens", "compute_ms", "cpu_seconds")
_Key = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class Prices:
    per_1k_requests: float = 0.0
    per_1k_items: float = 0.0
    per_1k_tokens: float = 0.0
    per_cpu_hour: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Prices:
        return cls(
            settings.price_per_1k_requests,
            settings.price_per_1k_items,
            settings.price_per_1k_tokens,
            settings.price_per_cpu_hour,
        )

    def cost(self, counts: Counts) -> float:
        return (
            counts.requests / 1000 * self.per_1k_requests
            + counts.items / 1000 * self.per_1k_items
            + counts.tokens / 1000 * self.per_1k_tokens
            + counts.cpu_seconds / 3600 * self.per_cpu_hour
        )


@dataclass
class Counts:
    requests: int = 0
    items: int = 0
    tokens: int = 0
    compute_ms: float = 0.0
    cpu_seconds: float = 0.0

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.items += other.items
        self.tokens += other.tokens
        self.compute_ms += other.compute_ms
        self.cpu_seconds += other.cpu_seconds

    def to_dict(self, prices: Prices) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "items": self.items,
            "tokens": self.tokens,
            "compute_ms": round(self.compute_ms, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "cost": round(prices.cost(self), 6),
        }


@dataclass
class UsageReport:
    group_by: list[str]
    rows: list[tuple[dict[str, str], Counts]]
    total: Counts
    prices: Prices
    start: datetime | None = None
    end: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat() + "Z" if self.start else None,
            "to": self.end.isoformat() + "Z" if self.end else None,
            "group_by": self.group_by,
            "rows": [{"group": group, **counts.to_dict(self.prices)} for group, counts in self.rows],
            "total": self.total.to_dict(self.prices),
            "prices": {
                "per_1k_requests": self.prices.per_1k_requests,
                "per_1k_items": self.prices.per_1k_items,
                "per_1k_tokens": self.prices.per_1k_tokens,
                "per_cpu_hour": self.prices.per_cpu_hour,
            },
        }


@dataclass
class _Pending:
    since: datetime = field(default_factory=utcnow)
    counts: dict[_Key, Counts] = field(default_factory=lambda: defaultdict(Counts))


class UsageMeter:
    def __init__(self, db: Database, *, flush_seconds: float, prices: Prices) -> None:
        self.db = db
        self.flush_seconds = flush_seconds
        self.prices = prices
        self._pending = _Pending()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._month_items: dict[str, tuple[float, int]] = {}

    # -- counting (the hot path) ----------------------------------------------------------------

    def record(
        self,
        project: str,
        key_id: str,
        model: str,
        endpoint: str = "",
        *,
        requests: int = 1,
        items: int = 0,
        tokens: int = 0,
        compute_ms: float = 0.0,
        kind: str = "inference",
        cpu_seconds: float = 0.0,
    ) -> None:
        with self._lock:
            counts = self._pending.counts[(project, key_id, model, endpoint, kind)]
            counts.requests += requests
            counts.items += items
            counts.tokens += tokens
            counts.compute_ms += compute_ms
            counts.cpu_seconds += cpu_seconds

    def record_job(self, project: str, key_id: str, kind: str, model: str, cpu_seconds: float) -> None:
        self.record(project, key_id, model, requests=0, kind=kind, cpu_seconds=cpu_seconds)

    # -- flushing ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stratus-usage-flush", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # the flusher must outlive a bad moment of the DB; counts are kept
                log.exception("usage flush failed; the counts are kept for the next one")

    def flush(self) -> int:
        """Write the pending counts; returns the rows written. On failure the counts go back."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, _Pending()
            rows = [
                UsageRecord(
                    period_start=pending.since.replace(microsecond=0),
                    project=project,
                    key_id=key_id,
                    model=model,
                    endpoint=endpoint,
                    kind=kind,
                    requests=c.requests,
                    items=c.items,
                    tokens=c.tokens,
                    compute_ms=c.compute_ms,
                    cpu_seconds=c.cpu_seconds,
                )
                for (project, key_id, model, endpoint, kind), c in pending.counts.items()
            ]
            if not rows:
                return 0
            try:
                with self.db.write() as s:
                    s.add_all(rows)
            except BaseException:
                self._merge_back(pending)
                raise
            self._month_items.clear()
            return len(rows)

    def _merge_back(self, pending: _Pending) -> None:
        with self._lock:
            for key, counts in pending.counts.items():
                self._pending.counts[key].add(counts)
            self._pending.since = min(self._pending.since, pending.since)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()

    # -- reading ----------------------------------------------------------------------------------

    def items_this_month(self, project: str) -> int:
        """Items inferred by ``project`` since the start of this UTC month: flushed plus pending. The DB
        part is read at most once per flush interval."""
        now = time.monotonic()
        cached = self._month_items.get(project)
        if cached is None or now - cached[0] > self.flush_seconds:
            month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
            with self.db.read() as s:
                flushed = s.scalar(
                    select(func.coalesce(func.sum(UsageRecord.items), 0)).where(
                        UsageRecord.project == project, UsageRecord.period_start >= month_start
                    )
                )
            cached = (now, int(flushed or 0))
            self._month_items[project] = cached
        with self._lock:
            pending = sum(c.items for k, c in self._pending.counts.items() if k[0] == project)
        return cached[1] + pending

    def _date_format(self, column: Any, unit: str) -> Any:
        if self.db.engine.dialect.name == "postgresql":
            return func.to_char(column, "YYYY-MM-DD" if unit == "day" else "YYYY-MM")
        return func.strftime("%Y-%m-%d" if unit == "day" else "%Y-%m", column)

    def query(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        group_by: list[str] | None = None,
        project: str | None = None,
    ) -> UsageReport:
        """Sums over [start, end) grouped by ``group_by``; ``project`` None means every project."""
        groups = list(dict.fromkeys(group_by or []))
        unknown = [g for g in groups if g not in GROUPS]
        if unknown:
            raise InvalidInput(f"unknown group_by {', '.join(unknown)}; use any of {', '.join(GROUPS)}")
        # An empty range ('to' not after 'from') simply has no usage: the query below returns none.
        self.flush()  # the report includes everything counted so far
        columns = {
            "project": UsageRecord.project,
            "key": UsageRecord.key_id,
            "model": UsageRecord.model,
            "endpoint": UsageRecord.endpoint,
            "kind": UsageRecord.kind,
            "day": self._date_format(UsageRecord.period_start, "day"),
            "month": self._date_format(UsageRecord.period_start, "month"),
        }
        selected = [columns[g].label(g) for g in groups]
        sums = [func.coalesce(func.sum(getattr(UsageRecord, f)), 0).label(f) for f in _FIELDS]
        query = select(*selected, *sums)
        if groups:
            query = query.group_by(*selected).order_by(*selected)
        if project is not None:
            query = query.where(UsageRecord.project == project)
        if start is not None:
            query = query.where(UsageRecord.period_start >= start)
        if end is not None:
            query = query.where(UsageRecord.period_start < end)
        rows: list[tuple[dict[str, str], Counts]] = []
        total = Counts()
        with self.db.read() as s:
            for row in s.execute(query):
                values = row._mapping
                counts = Counts(
                    int(values["requests"]),
                    int(values["items"]),
                    int(values["tokens"]),
                    float(values["compute_ms"]),
                    float(values["cpu_seconds"]),
                )
                if not groups and counts == Counts():
                    continue
                rows.append(({g: str(values[g]) for g in groups}, counts))
                total.add(counts)
        return UsageReport(groups, rows, total, self.prices, start, end)
