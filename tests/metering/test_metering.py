"""The usage meter: exact counts under threads, batched flushes, nothing lost on close, failed flushes kept,
reports grouped and priced."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from conftest import scaled
from stratus.errors import InvalidInput
from stratus.metering import Prices, UsageMeter
from stratus.store import Database


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def test_concurrent_records_are_exact_and_flushed_in_one_go(db: Database) -> None:
    meter = UsageMeter(db, flush_seconds=3600, prices=Prices())

    def work(thread: int) -> None:
        for _ in range(1000):
            meter.record("p", f"k{thread % 2}", "iris", items=2, tokens=3, compute_ms=0.5)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert meter.flush() == 2  # one row per (project, key, model, endpoint, kind)
    report = meter.query(group_by=["key"], project="p")
    assert [(r[0]["key"], r[1].requests, r[1].items) for r in report.rows] == [("k0", 4000, 8000), ("k1", 4000, 8000)]
    assert report.total.tokens == 24000 and report.total.compute_ms == pytest.approx(4000.0)


def test_close_loses_nothing_and_the_thread_flushes(db: Database) -> None:
    meter = UsageMeter(db, flush_seconds=0.05, prices=Prices())
    meter.start()
    meter.record("p", "k", "m", items=1)
    deadline = time.monotonic() + scaled(5)
    while meter.query(project="p").total.requests == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    meter.record("p", "k", "m", items=1)
    meter.close()
    again = UsageMeter(db, flush_seconds=3600, prices=Prices())
    assert again.query(project="p").total.items == 2


def test_a_failed_flush_keeps_its_counts(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    meter = UsageMeter(db, flush_seconds=3600, prices=Prices())
    meter.record("p", "k", "m", items=5)
    real_write = db.write

    def broken() -> object:
        raise RuntimeError("disk full")

    monkeypatch.setattr(db, "write", broken)
    with pytest.raises(RuntimeError):
        meter.flush()
    monkeypatch.setattr(db, "write", real_write)
    meter.record("p", "k", "m", items=1)
    assert meter.flush() == 1
    assert meter.query(project="p").total.items == 6


def test_groups_prices_months_and_jobs(db: Database) -> None:
    meter = UsageMeter(
        db, flush_seconds=3600, prices=Prices(per_1k_requests=1.0, per_1k_items=2.0, per_1k_tokens=0, per_cpu_hour=3.6)
    )
    for _ in range(500):
        meter.record("a", "k", "iris", items=2)
    meter.record_job("a", "k", "training", "digits", cpu_seconds=100.0)
    meter.record("b", "k2", "iris", items=7)
    report = meter.query(group_by=["project", "kind"])
    rows = {(g["project"], g["kind"]): c for g, c in report.rows}
    assert rows[("a", "inference")].requests == 500 and rows[("a", "training")].cpu_seconds == 100.0
    assert rows[("a", "training")].requests == 0
    # 500 requests (0.5) + 1000 items (2.0) + 7 items (0.014) + 1 request (0.001) + 100 CPU s (0.1)
    assert report.to_dict()["total"]["cost"] == pytest.approx(0.5 + 2.0 + 0.014 + 0.001 + 0.1)
    assert meter.items_this_month("a") == 1000
    meter.record("a", "k", "iris", items=3)
    assert meter.items_this_month("a") == 1003  # pending counts are included before any flush
    by_day = meter.query(group_by=["day", "month"]).rows
    assert len(by_day) == 1 and len(by_day[0][0]["day"]) == 10
    with pytest.raises(InvalidInput, match="unknown group_by colour"):
        meter.query(group_by=["colour"])


def test_record_is_cheap(db: Database) -> None:
    """Not a speed assertion: prints the cost per call that docs/security.md quotes."""
    meter = UsageMeter(db, flush_seconds=3600, prices=Prices())
    started = time.perf_counter()
    for _ in range(100_000):
        meter.record("p", "k", "iris", items=1, compute_ms=0.1)
    per_call_us = (time.perf_counter() - started) / 100_000 * 1e6
    print(f"UsageMeter.record: {per_call_us:.2f} us per call")
    assert meter.flush() == 1
