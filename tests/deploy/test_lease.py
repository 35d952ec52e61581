"""Endpoint control by one server at a time (deploy/lease.py): the pure decision on fake times, then two keepers on
the run's real PostgreSQL, and the single server on SQLite that always holds it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import scaled
from pg import PostgresServer
from stratus.deploy.lease import Action, LeaseKeeper, Row, decide, still_holds
from stratus.store import Database

T0 = datetime(2026, 12, 2, 3, 0, 0)
TTL = timedelta(seconds=5)


def test_a_free_lease_is_acquired_under_a_new_epoch() -> None:
    first = decide(None, "a", T0, TTL)
    assert first.action is Action.ACQUIRE and first.holds
    assert first.row == Row("a", 1, T0 + TTL)


def test_the_holder_renews_and_another_server_waits() -> None:
    held = Row("a", 3, T0 + TTL)
    renewed = decide(held, "a", T0 + timedelta(seconds=2), TTL)
    assert renewed.action is Action.RENEW and renewed.row == Row("a", 3, T0 + timedelta(seconds=7))
    other = decide(held, "b", T0 + timedelta(seconds=4.999), TTL)
    assert other.action is Action.WAIT and not other.holds and other.row == held


def test_an_expired_lease_goes_to_whoever_asks_first_with_the_next_epoch() -> None:
    held = Row("a", 3, T0 + TTL)
    taken = decide(held, "b", T0 + TTL, TTL)  # expiry is exclusive: at expires_at it is free
    assert taken.action is Action.ACQUIRE and taken.row == Row("b", 4, T0 + TTL + TTL)
    # The old holder coming back late gets it as a new epoch too, which tells it that it had lost control.
    back = decide(held, "a", T0 + timedelta(seconds=9), TTL)
    assert back.action is Action.ACQUIRE and back.row.epoch == 4


def test_a_holder_stops_acting_before_its_lease_can_have_run_out() -> None:
    assert still_holds(100.0, 100.0, 5.0) and still_holds(100.0, 103.9, 5.0)
    assert not still_holds(100.0, 104.0, 5.0)  # 80 % of the lease: a margin for the renewal's own delay
    assert not still_holds(None, 100.0, 5.0)


def test_on_sqlite_the_one_server_holds_control_without_a_row(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    db.migrate()
    acquired: list[str] = []
    keeper = LeaseKeeper(db, "only", on_acquired=lambda: acquired.append("only"))
    keeper.start()
    assert keeper.holding and acquired == ["only"]
    keeper.close()
    db.dispose()


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shared_db(postgres: PostgresServer) -> Iterator[Database]:
    """A database of the run's PostgreSQL: what several servers share."""
    name = postgres.create_database()
    db = Database(postgres.url(name))
    yield db
    db.dispose()
    postgres.drop_database(name)


def test_two_servers_one_holder_and_a_takeover_after_expiry(shared_db: Database) -> None:
    events: list[str] = []
    clock_a, clock_b = FakeMonotonic(), FakeMonotonic()

    def keeper(me: str, clock: FakeMonotonic) -> LeaseKeeper:
        return LeaseKeeper(
            shared_db,
            me,
            ttl_s=1.0,
            on_acquired=lambda: events.append(f"{me} acquired"),
            on_lost=lambda: events.append(f"{me} lost"),
            clock=clock,
        )

    a, b = keeper("a", clock_a), keeper("b", clock_b)
    assert a.step().action is Action.ACQUIRE and a.holding
    assert b.step().action is Action.WAIT and not b.holding
    assert a.step().action is Action.RENEW and a.epoch == 1
    # a stops renewing (it died or hangs). On its own clock it stops acting before the row can have expired...
    clock_a.now += 0.9
    assert not a.holding
    # ...and once the row's expiry passed on the database's clock, b takes over under a new epoch.
    deadline = time.monotonic() + scaled(10)
    while b.step().action is Action.WAIT:
        assert time.monotonic() < deadline, "the expired lease was never taken over"
        time.sleep(0.1)
    assert b.holding and b.epoch == 2
    # a comes back: it learns it lost control.
    assert a.step().action is Action.WAIT and not a.holding
    assert events == ["a acquired", "b acquired", "a lost"]


def test_a_renewal_after_a_lapse_on_the_holders_clock_starts_control_over(shared_db: Database) -> None:
    """The holder's renewal came late (a pause): its controller stood down meanwhile, so even with the row still
    its own, it takes control again from scratch (the endpoints are redeployed) instead of carrying on."""
    events: list[str] = []
    clock = FakeMonotonic()
    keeper = LeaseKeeper(
        shared_db,
        "a",
        ttl_s=30.0,
        on_acquired=lambda: events.append("acquired"),
        on_lost=lambda: events.append("lost"),
        clock=clock,
    )
    keeper.step()
    clock.now += 10.0
    assert keeper.step().action is Action.RENEW and events == ["acquired"]  # in time: nothing happens
    clock.now += 25.0  # more than 80 % of the lease since the last renewal began
    assert not keeper.holding
    assert keeper.step().action is Action.RENEW  # the row (30 s on the database's clock) is still ours
    assert events == ["acquired", "lost", "acquired"] and keeper.holding


def test_a_closing_holder_releases_at_once_and_only_one_of_many_acquires(shared_db: Database) -> None:
    keepers = [LeaseKeeper(shared_db, f"s{i}", ttl_s=30.0) for i in range(6)]
    barrier = threading.Barrier(len(keepers))
    actions: dict[str, Action] = {}

    def race(keeper: LeaseKeeper) -> None:
        barrier.wait()
        actions[keeper.me] = keeper.step().action

    threads = [threading.Thread(target=race, args=(k,)) for k in keepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [me for me, action in actions.items() if action is Action.ACQUIRE]
    assert len(winners) == 1 and sum(k.holding for k in keepers) == 1
    holder = next(k for k in keepers if k.me == winners[0])
    other = next(k for k in keepers if k is not holder)
    holder.close()  # a clean stop releases: no 30 s wait for the next server
    assert other.step().action is Action.ACQUIRE and other.holding
