"""The server's own metrics history, so charts and alerts need no Prometheus server.

Per model version (scope "model") and per endpoint (scope "endpoint"): requests, errors, items, a latency
histogram, runtime batch sizes, queue depth and replicas, kept at 10 s resolution for 24 hours and at 5 min
resolution for 30 days. The data plane calls ``observe`` for each inference (on the event loop: a lock, a
dict lookup and a few additions); a thread closes each 10 s interval, samples the gauges, writes the rows
and rolls them up into 5 min rows. Latency is a sparse histogram on a log grid (buckets 2^(1/8) apart,
a bucket read back as its geometric middle is within 4.5% of any value in it), so intervals merge and any
step's quantiles are exact to the grid.

Reading: ``series(project, scope, name, metric, start, end, step)`` merges the stored rows (and the interval
still open in memory) into steps and computes the metric per step.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select

from stratus.dataplane import InferenceEvent
from stratus.errors import InvalidInput
from stratus.store import Database
from stratus.store.tables import MetricsPoint

log = logging.getLogger(__name__)

FINE, COARSE = 10, 300
FINE_KEEP, COARSE_KEEP = 86400.0, 30 * 86400.0
_BASE = 1e-5  # 10 us: bucket 0 holds everything faster
_RATIO = 2 ** (1 / 8)
_LOG_RATIO = math.log(_RATIO)
_TOP = 255

METRICS: dict[str, str] = {
    "requests_per_s": "requests per second (served and failed)",
    "errors_per_s": "failed requests per second",
    "error_rate": "failed requests / all requests (0-1); no value without requests",
    "items_per_s": "inferred items (rows) per second",
    "mean_ms": "mean request latency, milliseconds",
    "p50_ms": "median request latency, milliseconds",
    "p95_ms": "95th percentile of request latency, milliseconds",
    "p99_ms": "99th percentile of request latency, milliseconds",
    "batch_size": "mean rows per ONNX Runtime run (models only)",
    "queue_depth": "mean requests waiting in the batching queue (models only)",
    "replicas": "mean ready replicas (endpoints only)",
    "log_dropped": "inference log records dropped (queue full) in the step",
}

#: Gauge rows sampled each interval: (project, model, version) -> (batch rows, batch runs) since start,
#: (project, model, version) -> queued requests now, (project, endpoint) -> ready replicas now.
Gauges = Callable[
    [], tuple[dict[tuple[str, str, int], tuple[int, int]], dict[tuple[str, str, int], int], dict[tuple[str, str], int]]
]
SeriesKey = tuple[str, str, str, int]  # project, scope, name, version


def registry_gauges(registry: Any) -> Gauges:
    """The gauges read from the data plane's Prometheus registry: runtime batch sizes (the batch size
    histogram's sum and count), queue depths and ready replicas, as /metrics shows them."""

    def read() -> tuple[
        dict[tuple[str, str, int], tuple[int, int]], dict[tuple[str, str, int], int], dict[tuple[str, str], int]
    ]:
        sums: dict[tuple[str, str, int], float] = {}
        counts: dict[tuple[str, str, int], float] = {}
        queues: dict[tuple[str, str, int], int] = {}
        replicas: dict[tuple[str, str], int] = {}
        for family in registry.collect():
            if family.name == "stratus_inference_batch_size":
                for sample in family.samples:
                    labels = sample.labels
                    key = (labels["project"], labels["model"], int(labels["version"]))
                    if sample.name.endswith("_sum"):
                        sums[key] = sample.value
                    elif sample.name.endswith("_count"):
                        counts[key] = sample.value
            elif family.name == "stratus_inference_queue_depth":
                for sample in family.samples:
                    labels = sample.labels
                    queues[(labels["project"], labels["model"], int(labels["version"]))] = int(sample.value)
            elif family.name == "stratus_endpoint_replicas":
                for sample in family.samples:
                    if sample.labels["state"] == "ready":
                        key2 = (sample.labels["project"], sample.labels["endpoint"])
                        replicas[key2] = replicas.get(key2, 0) + int(sample.value)
        batches = {key: (int(sums.get(key, 0)), int(count)) for key, count in counts.items()}
        return batches, queues, replicas

    return read


def bucket_of(seconds: float) -> int:
    if seconds <= _BASE:
        return 0
    return min(_TOP, 1 + int(math.log(seconds / _BASE) / _LOG_RATIO))


def bucket_value(index: int) -> float:
    """The geometric middle of a bucket, in seconds."""
    if index == 0:
        return _BASE
    return float(_BASE * _RATIO ** (index - 0.5))


@dataclass
class Point:
    """One interval's totals of one series."""

    requests: int = 0
    errors: int = 0
    items: int = 0
    latency_sum: float = 0.0
    latency: dict[int, int] = field(default_factory=dict)
    batch_rows: int = 0
    batch_runs: int = 0
    queue_sum: float = 0.0
    replicas_sum: float = 0.0
    samples: int = 0
    dropped: int = 0

    def add(self, other: Point) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.items += other.items
        self.latency_sum += other.latency_sum
        for bucket, count in other.latency.items():
            self.latency[bucket] = self.latency.get(bucket, 0) + count
        self.batch_rows += other.batch_rows
        self.batch_runs += other.batch_runs
        self.queue_sum += other.queue_sum
        self.replicas_sum += other.replicas_sum
        self.samples += other.samples
        self.dropped += other.dropped

    def quantile(self, q: float) -> float | None:
        total = sum(self.latency.values())
        if total == 0:
            return None
        rank, seen = q * total, 0
        for bucket in sorted(self.latency):
            seen += self.latency[bucket]
            if seen >= rank:
                return bucket_value(bucket)
        return bucket_value(max(self.latency))

    def metric(self, name: str, seconds: float) -> float | None:
        if name == "requests_per_s":
            return self.requests / seconds
        if name == "errors_per_s":
            return self.errors / seconds
        if name == "items_per_s":
            return self.items / seconds
        if name == "error_rate":
            return self.errors / self.requests if self.requests else None
        if name == "mean_ms":
            return self.latency_sum / self.requests * 1000.0 if self.requests else None
        if name in ("p50_ms", "p95_ms", "p99_ms"):
            value = self.quantile(int(name[1:3]) / 100)
            return None if value is None else value * 1000.0
        if name == "batch_size":
            return self.batch_rows / self.batch_runs if self.batch_runs else None
        if name == "queue_depth":
            return self.queue_sum / self.samples if self.samples else None
        if name == "replicas":
            return self.replicas_sum / self.samples if self.samples else None
        if name == "log_dropped":
            return float(self.dropped)
        raise InvalidInput(f"unknown metric {name!r}; known: {', '.join(METRICS)}")

    def row(self, resolution: int, at: float, key: SeriesKey) -> dict[str, Any]:
        project, scope, name, version = key
        return {
            "resolution": resolution,
            "at": at,
            "project": project,
            "scope": scope,
            "name": name,
            "version": version,
            "requests": self.requests,
            "errors": self.errors,
            "items": self.items,
            "latency_sum": self.latency_sum,
            "latency": {str(k): v for k, v in self.latency.items()},
            "batch_rows": self.batch_rows,
            "batch_runs": self.batch_runs,
            "queue_sum": self.queue_sum,
            "replicas_sum": self.replicas_sum,
            "samples": self.samples,
            "dropped": self.dropped,
        }

    @classmethod
    def of(cls, row: MetricsPoint) -> Point:
        return cls(
            row.requests,
            row.errors,
            row.items,
            row.latency_sum,
            {int(k): int(v) for k, v in row.latency.items()},
            row.batch_rows,
            row.batch_runs,
            row.queue_sum,
            row.replicas_sum,
            row.samples,
            row.dropped,
        )


class MetricsHistory:
    def __init__(self, db: Database, *, gauges: Gauges | None = None, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.gauges = gauges
        self.clock = clock
        self._lock = threading.Lock()
        # (project, model, version, endpoint) -> [requests, errors, items, latency sum, {bucket: count}]
        self._open: dict[tuple[str, str, int, str], list[Any]] = {}
        self._dropped: dict[tuple[str, str, str], int] = {}
        self._interval = self._fine_start(clock())
        self._rollup: dict[SeriesKey, Point] = {}
        self._rollup_at = self._interval - self._interval % COARSE
        self._last_batches: dict[tuple[str, str, int], tuple[int, int]] = {}
        self._pending: dict[SeriesKey, Point] = {}  # the last closed interval, until it is written
        #: Told the end (Unix seconds) of each interval once it is readable: alert rules are evaluated then.
        self.closed_listeners: list[Callable[[float], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _fine_start(now: float) -> float:
        return now - now % FINE

    # -- the hot path ---------------------------------------------------------------------------------------

    def observe(self, event: InferenceEvent) -> None:
        key = (event.caller.project, event.model, event.version, event.endpoint)
        seconds = event.seconds
        bucket = 0 if seconds <= _BASE else min(_TOP, 1 + int(math.log(seconds / _BASE) / _LOG_RATIO))
        with self._lock:
            acc = self._open.get(key)
            if acc is None:
                acc = self._open[key] = [0, 0, 0, 0.0, {}]
            acc[0] += 1
            if event.status >= 400:
                acc[1] += 1
            acc[2] += event.items
            acc[3] += seconds
            hist = acc[4]
            hist[bucket] = hist.get(bucket, 0) + 1

    def dropped(self, project: str, model: str, endpoint: str) -> None:
        """An inference log record was dropped (the log's queue was full)."""
        with self._lock:
            key = (project, model, endpoint)
            self._dropped[key] = self._dropped.get(key, 0) + 1

    # -- intervals ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stratus-metrics-history", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(max(0.05, self._interval + FINE - self.clock())):
            try:
                self.tick()
            except Exception:
                log.exception("the metrics history failed to close an interval")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def tick(self, now: float | None = None) -> None:
        """Close the open interval if it has ended: sample the gauges, write its rows and roll them up."""
        now = self.clock() if now is None else now
        if now < self._interval + FINE:
            return
        at = self._interval
        with self._lock:
            opened, self._open = self._open, {}
            dropped, self._dropped = self._dropped, {}
            self._interval = self._fine_start(now)
        points: dict[SeriesKey, Point] = {}

        def point(key: SeriesKey) -> Point:
            found = points.get(key)
            if found is None:
                found = points[key] = Point()
            return found

        for (project, model, version, endpoint), (requests, errors, items, total, hist) in opened.items():
            one = Point(requests, errors, items, total, dict(hist))
            if model:
                point((project, "model", model, version)).add(one)
            if endpoint:
                point((project, "endpoint", endpoint, version)).add(one)
        for (project, model, endpoint), count in dropped.items():
            point((project, "endpoint", endpoint, 0) if endpoint else (project, "model", model, 0)).dropped += count
        self._sample_gauges(point)
        self._pending = points
        rows = [p.row(FINE, at, key) for key, p in points.items()]
        rolled = self._roll(at, points)
        with self.db.write() as s:
            if rows:
                s.execute(insert(MetricsPoint), rows)
            if rolled:
                s.execute(insert(MetricsPoint), rolled)
                s.execute(delete(MetricsPoint).where(MetricsPoint.resolution == FINE, MetricsPoint.at < at - FINE_KEEP))
                s.execute(
                    delete(MetricsPoint).where(MetricsPoint.resolution == COARSE, MetricsPoint.at < at - COARSE_KEEP)
                )
        self._pending = {}
        for listener in self.closed_listeners:
            listener(at + FINE)

    def _sample_gauges(self, point: Callable[[SeriesKey], Point]) -> None:
        if self.gauges is None:
            return
        batches, queues, replicas = self.gauges()
        for key, (rows, runs) in batches.items():
            before = self._last_batches.get(key, (0, 0))
            if runs > before[1]:
                p = point((key[0], "model", key[1], key[2]))
                p.batch_rows += rows - before[0]
                p.batch_runs += runs - before[1]
        self._last_batches = dict(batches)
        for (project, model, version), queued in queues.items():
            p = point((project, "model", model, version))
            p.queue_sum += queued
            p.samples += 1
        for (project, endpoint), ready in replicas.items():
            p = point((project, "endpoint", endpoint, 0))
            p.replicas_sum += ready
            p.samples += 1

    def _roll(self, at: float, points: dict[SeriesKey, Point]) -> list[dict[str, Any]]:
        """Add an interval to the open 5 min rows; when ``at`` starts a new 5 min interval, return the rows
        of the one that ended."""
        coarse_at = at - at % COARSE
        ended: list[dict[str, Any]] = []
        if coarse_at != self._rollup_at:
            ended = [p.row(COARSE, self._rollup_at, key) for key, p in self._rollup.items()]
            self._rollup, self._rollup_at = {}, coarse_at
        for key, p in points.items():
            self._rollup.setdefault(key, Point()).add(p)
        return ended

    # -- reading --------------------------------------------------------------------------------------------

    def series(
        self,
        project: str,
        scope: str,
        name: str,
        metric: str,
        start: float,
        end: float,
        step: float,
        version: int | None = None,
    ) -> list[tuple[float, float | None]]:
        """``metric`` of a model (all versions, or one) or an endpoint per ``step`` seconds from ``start`` to
        ``end`` (Unix times), as (step start, value) pairs; None where there is nothing to compute from."""
        return self.many(project, scope, name, [metric], start, end, step, version)[metric]

    def many(
        self,
        project: str,
        scope: str,
        name: str,
        metrics: list[str],
        start: float,
        end: float,
        step: float,
        version: int | None = None,
    ) -> dict[str, list[tuple[float, float | None]]]:
        for metric in metrics:
            if metric not in METRICS:
                raise InvalidInput(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
        if scope not in ("model", "endpoint"):
            raise InvalidInput("scope must be model or endpoint")
        if not end > start or step <= 0 or (end - start) / step > 10_000:
            raise InvalidInput("need start < end and a step that makes at most 10,000 points")
        now = self.clock()
        # 10 s rows wherever they are kept, so a window of any step ends at the last closed 10 s interval.
        resolution = FINE if start >= now - FINE_KEEP else COARSE
        steps = math.ceil((end - start) / step - 1e-9)  # a window of whole steps, whatever float rounding did
        merged = [Point() for _ in range(steps)]

        def add(at: float, key: SeriesKey, p: Point) -> None:
            if key[0] != project or key[1] != scope or key[2] != name:
                return
            if version is not None and key[3] != version:
                return
            if start <= at < end:
                merged[int((at - start) // step)].add(p)

        query = select(MetricsPoint).where(
            MetricsPoint.project == project,
            MetricsPoint.scope == scope,
            MetricsPoint.name == name,
            MetricsPoint.resolution == resolution,
            MetricsPoint.at >= start - resolution,
            MetricsPoint.at < end,
        )
        if version is not None:
            query = query.where(MetricsPoint.version == version)
        with self.db.read() as s:
            rows = list(s.scalars(query))
        written = {(r.at, r.version) for r in rows}
        for r in rows:
            add(r.at, (r.project, r.scope, r.name, r.version), Point.of(r))
        # What is not in the DB yet: the interval being written, and (coarse) the open 5 min interval.
        if resolution == FINE:
            for key, p in list(self._pending.items()):
                at = self._interval - FINE
                if (at, key[3]) not in written:
                    add(at, key, p)
        else:
            for key, p in list(self._rollup.items()):
                add(self._rollup_at, key, p)
        return {
            metric: [(start + i * step, merged[i].metric(metric, step)) for i in range(steps)] for metric in metrics
        }

    def window(
        self, project: str, scope: str, name: str, metric: str, seconds: float, version: int | None = None
    ) -> float | None:
        """``metric`` over the last ``seconds`` (closed 10 s intervals), e.g. p99_ms of the last 5 minutes."""
        end = self._interval
        [(_, value)] = self.series(project, scope, name, metric, end - seconds, end, seconds, version)
        return value

    def project_traffic(self, project: str, start: float, end: float, step: float) -> list[tuple[float, int, int]]:
        """A project's model traffic (every model and version together) per ``step`` seconds from ``start`` to
        ``end``: (step start, requests, failed requests), from the written intervals (up to 10 s behind). One
        grouped query, however many models there are: what the console's overview draws."""
        if not end > start or step <= 0 or (end - start) / step > 10_000:
            raise InvalidInput("need start < end and a step that makes at most 10,000 points")
        resolution = FINE if start >= self.clock() - FINE_KEEP else COARSE
        steps = math.ceil((end - start) / step - 1e-9)
        totals = [[0, 0] for _ in range(steps)]
        bucket = func.floor((MetricsPoint.at - start) / step)
        query = (
            select(bucket, func.sum(MetricsPoint.requests), func.sum(MetricsPoint.errors))
            .where(
                MetricsPoint.project == project,
                MetricsPoint.scope == "model",
                MetricsPoint.resolution == resolution,
                MetricsPoint.at >= start,
                MetricsPoint.at < end,
            )
            .group_by(bucket)
        )
        with self.db.read() as s:
            rows = list(s.execute(query))
        for index, requests, errors in rows:
            i = int(index)
            if 0 <= i < steps:
                totals[i][0] += int(requests or 0)
                totals[i][1] += int(errors or 0)
        return [(start + i * step, r, e) for i, (r, e) in enumerate(totals)]
