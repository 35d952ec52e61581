"""The metrics history on its own (a DB, a clock given by the test): intervals, quantiles from merged
histograms, model and endpoint series, gauges, the 5 minute roll-up, retention; and the inference log's
retention by age and by size."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from stratus.dataplane import InferenceEvent
from stratus.errors import InvalidInput
from stratus.monitoring.history import COARSE, FINE, MetricsHistory, bucket_of, bucket_value
from stratus.monitoring.log import InferenceLog
from stratus.monitoring.policy import LogPolicy, LogSettings
from stratus.security.encryption import Keyring
from stratus.security.masking import PayloadSeal
from stratus.store import Database
from stratus.store.tables import InferenceLogPage, MetricsPoint
from stratus.tenancy import Caller

T0 = 1_800_000_000.0  # a multiple of 300 s: the 5 minute intervals start here


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def event(seconds: float, *, status: int = 200, version: int = 1, endpoint: str = "", items: int = 1) -> InferenceEvent:
    return InferenceEvent(
        T0, Caller("default", "k"), "iris", version, endpoint, "v2", seconds, status, "", items, {}, {}
    )


@pytest.fixture
def db(tmp_path: Path) -> Any:
    database = Database(f"sqlite:///{tmp_path / 'h.db'}")
    database.migrate()
    yield database
    database.dispose()


def test_buckets_are_within_five_percent() -> None:
    for seconds in (0.0002, 0.001, 0.0137, 0.2, 3.0):
        assert bucket_value(bucket_of(seconds)) == pytest.approx(seconds, rel=0.05)


def test_intervals_rates_quantiles_and_scopes(db: Database) -> None:
    clock = Clock()
    gauges = (
        {("default", "iris", 1): (120, 10)},  # batch rows, runs since start
        {("default", "iris", 1): 4},  # queued requests now
        {("default", "flowers"): 2},  # ready replicas now
    )
    history = MetricsHistory(db, gauges=lambda: gauges, clock=clock)
    for _ in range(97):
        history.observe(event(0.010))
    for _ in range(2):
        history.observe(event(0.500))
    history.observe(event(0.002, status=500))
    for _ in range(10):
        history.observe(event(0.004, endpoint="flowers", version=2, items=3))
    for _ in range(3):
        history.dropped("default", "iris", "")  # the inference log's queue was full
    clock.now = T0 + FINE
    history.tick()
    series = history.many(
        "default", "model", "iris", ["requests_per_s", "error_rate", "p50_ms", "p99_ms", "batch_size", "queue_depth"],
        T0, T0 + FINE, FINE,
    )  # fmt: skip
    assert series["requests_per_s"] == [(T0, 110 / FINE)]  # its own 100 and the 10 through the endpoint
    assert series["error_rate"] == [(T0, pytest.approx(1 / 110))]
    assert series["p50_ms"][0][1] == pytest.approx(10.0, rel=0.05)
    assert series["p99_ms"][0][1] == pytest.approx(500.0, rel=0.05)
    assert series["batch_size"] == [(T0, 12.0)] and series["queue_depth"] == [(T0, 4.0)]
    assert history.series("default", "model", "iris", "log_dropped", T0, T0 + FINE, FINE) == [(T0, 3.0)]
    assert history.series("default", "model", "iris", "requests_per_s", T0, T0 + FINE, FINE, version=2) == [
        (T0, 10 / FINE)
    ]
    endpoint = history.many("default", "endpoint", "flowers", ["items_per_s", "replicas", "p99_ms"], T0, T0 + 20, 20)
    assert endpoint["items_per_s"] == [(T0, 30 / 20)] and endpoint["replicas"] == [(T0, 2.0)]
    assert endpoint["p99_ms"][0][1] == pytest.approx(4.0, rel=0.05)
    # Another project sees nothing; a quiet step has no latency to report.
    assert history.series("other", "model", "iris", "requests_per_s", T0, T0 + FINE, FINE) == [(T0, 0.0)]
    assert history.series("default", "model", "iris", "p99_ms", T0 + FINE, T0 + 2 * FINE, FINE) == [(T0 + FINE, None)]
    clock.now = T0 + 2 * FINE
    assert history.window("default", "model", "iris", "requests_per_s", 20) == pytest.approx(110 / 20)


def test_five_minute_rollup_and_retention(db: Database) -> None:
    clock = Clock()
    history = MetricsHistory(db, clock=clock)
    for step in range(COARSE // FINE):  # one request in each 10 s interval of the first 5 minutes
        history.observe(event(0.001 * (step + 1)))
        clock.now = T0 + (step + 1) * FINE
        history.tick()
    history.observe(event(0.001))
    clock.now += FINE
    history.tick()  # the first interval of the next 5 minutes closes the first 5 minutes
    # Read from 25 hours ago: only 5 minute rows can answer.
    clock.now = T0 + 25 * 3600
    [(_, rate)] = history.series("default", "model", "iris", "requests_per_s", T0, T0 + COARSE, COARSE)
    assert rate == pytest.approx(30 / COARSE)
    [(_, p99)] = history.series("default", "model", "iris", "p99_ms", T0, T0 + COARSE, COARSE)
    assert p99 == pytest.approx(30.0, rel=0.05)
    # 10 s rows older than a day go at the next roll-up.
    for _ in range(COARSE // FINE + 1):
        clock.now += FINE
        history.tick()
    history.observe(event(0.001))
    clock.now = T0 + 25 * 3600 + COARSE + 2 * FINE
    history.tick()
    with db.read() as s:
        fine_left = s.scalar(select(func.count()).where(MetricsPoint.resolution == FINE, MetricsPoint.at < T0 + COARSE))
        coarse_left = s.scalar(select(func.count()).where(MetricsPoint.resolution == COARSE))
    assert fine_left == 0 and coarse_left >= 1


def test_bad_series_questions_are_refused(db: Database) -> None:
    history = MetricsHistory(db)
    for args in (
        ("model", "iris", "p42_ms", T0, T0 + 60, 60),
        ("nope", "iris", "p99_ms", T0, T0 + 60, 60),
        ("model", "iris", "p99_ms", T0 + 60, T0, 60),
        ("model", "iris", "p99_ms", T0, T0 + 10**7, 10),
    ):
        with pytest.raises(InvalidInput):
            history.series("default", *args)  # type: ignore[arg-type]


def _logged(db: Database, **limits: Any) -> InferenceLog:
    settings = LogSettings(db, LogPolicy("all", 1.0, True))
    return InferenceLog(db, PayloadSeal(db, Keyring.generate()), settings, **limits)


def _served(at: float) -> InferenceEvent:
    row = {"input": np.ones((1, 64), dtype=np.float32)}
    return InferenceEvent(at, Caller("default", "k"), "iris", 1, "", "v2", 0.001, 200, "", 1, row, None)


def test_log_retention_by_age_then_by_size(db: Database) -> None:
    log = _logged(db, max_age_seconds=3600, max_bytes=10**9)
    now = time.time()
    for at in (now - 7200, now - 60, now):  # one page each
        log.observe(_served(at))
        log.flush()
    assert log.retain(now) == 1
    assert [round(r.at) for r in log.records("default", model="iris")] == [round(now), round(now - 60)]
    with db.read() as s:
        newest = s.scalar(select(InferenceLogPage.size).order_by(InferenceLogPage.id.desc()).limit(1))
    log.max_bytes = newest  # room for the newest page only
    assert log.retain(now) == 1
    assert [round(r.at) for r in log.records("default", model="iris")] == [round(now)]
    # Records keep opening after their older keys' pages were deleted.
    log.observe(_served(now + 1))
    assert len(list(log.records("default", model="iris"))) == 2


def test_log_pages_keep_each_tensors_dtype_and_shape(db: Database) -> None:
    """One page holds tensors in the writer's fast form (the dtype once in the page) and in its other forms
    (another dtype for the same name, an empty or 0-d tensor, a long one); each reads back as it was."""
    log = _logged(db)
    sent = [
        {"x": np.arange(6, dtype=np.float32).reshape(2, 3)},
        {"x": np.arange(3, dtype=np.float64).reshape(1, 3)},  # the page knows x as float32
        {"x": np.zeros((0, 3), dtype=np.float32)},
        {"x": np.array(7, dtype=np.int64)},
        {"x": np.ones((2, 3), dtype=np.float32), "ids": np.array([[1, 2]], dtype=np.int32)},
    ]
    for inputs in sent:
        log.observe(InferenceEvent(T0, Caller("default", "k"), "m", 1, "", "v2", 0.001, 200, "", 1, inputs, None))
    long = {"input": np.arange(2000, dtype=np.float32).reshape(1, 2000)}
    log.observe(InferenceEvent(T0, Caller("default", "k"), "m", 1, "", "v2", 0.001, 200, "", 1, long, None))
    log.flush()
    records = list(reversed(list(log.records("default", model="m"))))
    for record, inputs in zip(records, sent, strict=False):
        for name, array in inputs.items():
            tensor = record.inputs[name]
            assert (tensor["dtype"], tensor["shape"]) == (array.dtype.str, list(array.shape)), name
            assert tensor["data"] == array.reshape(-1).tolist()
    assert [r.inputs["x"]["dtype"] for r in records if "x" in r.inputs] == ["<f4", "<f8", "<f4", "<i8", "<f4"]
    truncated = records[-1].inputs["input"]
    assert truncated["truncated"] and len(truncated["data"]) == 1000 and truncated["shape"] == [1, 2000]
