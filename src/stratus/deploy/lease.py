"""Endpoint control by exactly one server at a time: a lease row in the shared database.

Several servers on one PostgreSQL all serve the API and run jobs, but only one runs the endpoints' controller
(rollouts, supervision, autoscaling): two would both start replicas for the same endpoint. Each server's keeper
renews or tries to take the ``endpoint-control`` row every third of the lease; the decision is the pure function
``decide`` over the row and the database's clock (servers' own clocks may disagree), unit-tested on fake times. A
holder that dies stops renewing, and another server takes the lease once it has expired: within ``ttl`` plus one
renewal interval. A holder that cannot reach the database stops acting on its own before its lease can have expired
(``still_holds``, on its monotonic clock), so two servers never both believe they hold it.

On embedded SQLite there is one server: it holds the lease from the start, without a row or a thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from stratus.store import Database
from stratus.store.tables import Lease

log = logging.getLogger(__name__)

ENDPOINT_CONTROL = "endpoint-control"


class Action(Enum):
    ACQUIRE = "acquire"  # nobody holds it, or the holder's lease expired: take it (a new epoch)
    RENEW = "renew"  # we hold it: extend it
    WAIT = "wait"  # another server holds an unexpired lease


@dataclass(frozen=True)
class Row:
    holder: str
    epoch: int
    expires_at: datetime


@dataclass(frozen=True)
class Decision:
    action: Action
    row: Row  # what the row becomes (unchanged for WAIT)

    @property
    def holds(self) -> bool:
        return self.action is not Action.WAIT


def decide(row: Row | None, me: str, now: datetime, ttl: timedelta) -> Decision:
    """What ``me`` does with the lease at ``now`` (the database's clock). An expired lease is free even for the
    server that held it; it comes back under a new epoch, which tells it that it had lost control meanwhile."""
    if row is None or row.expires_at <= now:
        epoch = row.epoch + 1 if row is not None else 1
        return Decision(Action.ACQUIRE, Row(me, epoch, now + ttl))
    if row.holder == me:
        return Decision(Action.RENEW, Row(me, row.epoch, now + ttl))
    return Decision(Action.WAIT, row)


def still_holds(renewed_at: float | None, now: float, ttl: float) -> bool:
    """Whether a holder may go on acting, on its own monotonic clock: until ``ttl`` minus a margin after the start
    of its last successful renewal (the row's expiry was computed after that moment, so it expires later)."""
    return renewed_at is not None and now - renewed_at < ttl * 0.8


Callback = Callable[[], object]


class LeaseKeeper:
    """Keeps trying to hold one lease; calls ``on_acquired`` when this server gains control and ``on_lost`` when it
    loses it (another server took over after this one could not renew, or the database is unreachable)."""

    def __init__(
        self,
        db: Database,
        me: str,
        *,
        name: str = ENDPOINT_CONTROL,
        ttl_s: float = 5.0,
        on_acquired: Callback | None = None,
        on_lost: Callback | None = None,
        on_held: Callback | None = None,
        on_following: Callback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.me = me
        self.name = name
        self.ttl_s = ttl_s
        self.on_acquired = on_acquired or (lambda: None)
        self.on_lost = on_lost or (lambda: None)
        #: Called after each renewal while holding (the controller picks up changes made on other servers).
        self.on_held = on_held or (lambda: None)
        #: Called after each round while another server holds it (this one follows what the holder publishes).
        self.on_following = on_following or (lambda: None)
        self._clock = clock
        self._renewed_at: float | None = None
        self._holding = False
        self.epoch = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def holding(self) -> bool:
        """True while this server may act as the controller."""
        if not self.db.shared:
            return True
        return self._holding and still_holds(self._renewed_at, self._clock(), self.ttl_s)

    def start(self) -> None:
        """Take control at once when possible (a single server, or the first of several), then keep it up."""
        if not self.db.shared:
            self._holding = True
            self.on_acquired()
            return
        self.step()
        self._thread = threading.Thread(target=self._run, name="stratus-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.step()
            except Exception:  # the DB is unreachable: step down once the lease may have run out
                log.exception("could not renew the %s lease", self.name)
                self._check_expiry()
                continue
            try:
                (self.on_held if self.holding else self.on_following)()
            except Exception:
                log.exception("the periodic work of a %s round failed", self.name)

    def _check_expiry(self) -> None:
        if self._holding and not still_holds(self._renewed_at, self._clock(), self.ttl_s):
            self._lose("its lease ran out without a renewal")

    def step(self) -> Decision:
        """One round: read the row under a row lock, decide, write. Runs the callbacks on a change of control."""
        started = self._clock()
        with self.db.write() as s:
            s.execute(
                insert(Lease)
                .values(name=self.name, holder="", epoch=0, expires_at=datetime(1970, 1, 1))
                .on_conflict_do_nothing(index_elements=["name"])
            )
            now = s.scalar(select(func.timezone("UTC", func.now())))
            assert isinstance(now, datetime)
            found = s.scalar(select(Lease).where(Lease.name == self.name).with_for_update())
            assert found is not None
            current = Row(found.holder, found.epoch, found.expires_at)
            decision = decide(current if found.holder else None, self.me, now, timedelta(seconds=self.ttl_s))
            if decision.action is not Action.WAIT:
                found.holder, found.epoch, found.expires_at = (
                    decision.row.holder,
                    decision.row.epoch,
                    decision.row.expires_at,
                )
                if decision.action is Action.ACQUIRE:
                    found.acquired_at = now
        if decision.holds:
            # Our lease expired and we took it again (a new epoch), or it lapsed on our own clock, when this server
            # stopped acting (the controller stands down): either way, start over as a new holder.
            lapsed = decision.row.epoch != self.epoch or not still_holds(self._renewed_at, started, self.ttl_s)
            if self._holding and lapsed:
                self._lose("its lease lapsed before this renewal")
            self._renewed_at = started
            self.epoch = decision.row.epoch
            if not self._holding:
                self._holding = True
                log.warning("this server (%s) now holds %s (epoch %d)", self.me, self.name, self.epoch)
                self.on_acquired()
        elif self._holding:
            self._lose(f"server {decision.row.holder} holds it now")
        return decision

    def _lose(self, why: str) -> None:
        self._holding = False
        log.warning("this server (%s) no longer holds %s: %s", self.me, self.name, why)
        self.on_lost()

    def close(self) -> None:
        """Stop renewing; release the lease so another server takes over at once instead of after it expires."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.db.shared and self._holding:
            self._holding = False
            try:
                with self.db.write() as s:
                    row = s.scalar(select(Lease).where(Lease.name == self.name).with_for_update())
                    if row is not None and row.holder == self.me:
                        row.expires_at = datetime(1970, 1, 1)
            except Exception:
                log.exception("could not release the %s lease; it expires by itself", self.name)
