"""Delivery of alert webhooks: off the evaluation loop, retried with exponential backoff, every attempt logged.

A delivery is queued with the time it is due; one worker thread sends whatever is due, so a slow receiver
delays the others by at most one attempt's timeout. Each attempt checks the URL against the outbound policy
again and connects to the address it just checked (stratus.security.outbound): a host that resolved to a
public address when the rule was made and to 10.0.0.5 now is refused, not called. A 2xx answer delivers;
anything else (another status, a timeout, a refused connection) is retried after ``backoff_s * 2**(n-1)``
seconds, up to ``attempts`` in all. A URL the policy refuses is not retried: it will not become allowed.

Every attempt is a row in alert_deliveries and the event's ``delivery`` says where it stands (pending,
delivered, failed), so ``stratus alerts history`` shows why a receiver got nothing. Events still pending
when the server stops are queued again at the next start (AlertService.start).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from stratus.errors import InvalidInput
from stratus.monitoring.webhooks import signed_headers
from stratus.security.outbound import OutboundPolicy, pinned_request
from stratus.store import Database
from stratus.store.tables import AlertDelivery, AlertEvent

log = logging.getLogger(__name__)

#: The longest wait between two attempts, whatever the backoff doubles to.
MAX_BACKOFF_S = 600.0
_MAX_ERROR = 500


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    delivery: Delivery = field(compare=False)


@dataclass
class Delivery:
    event_id: int
    url: str
    secret: bytes
    body: bytes
    attempt: int = 0


class WebhookSender:
    def __init__(
        self,
        db: Database,
        policy: OutboundPolicy,
        *,
        attempts: int,
        backoff_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.policy = policy
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._queue: list[_Due] = []
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # No environment proxies: the connection must go to the address the policy checked.
        self._client = httpx.Client(trust_env=False, follow_redirects=False)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stratus-webhooks", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 5)
        self._client.close()

    def submit(self, delivery: Delivery, delay_s: float = 0.0) -> None:
        with self._wake:
            heapq.heappush(self._queue, _Due(time.monotonic() + delay_s, next(self._seq), delivery))
            self._wake.notify_all()

    def pending(self) -> int:
        with self._wake:
            return len(self._queue)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (not self._queue or self._queue[0].at > time.monotonic()):
                    wait = self._queue[0].at - time.monotonic() if self._queue else None
                    self._wake.wait(timeout=wait)
                if self._stopping:
                    return
                due = heapq.heappop(self._queue)
            try:
                self._attempt(due.delivery)
            except Exception:  # the worker must outlive any one delivery (a DB hiccup included)
                log.exception("webhook delivery of alert event %d failed unexpectedly", due.delivery.event_id)

    def _attempt(self, delivery: Delivery) -> None:
        delivery.attempt += 1
        status: int | None = None
        error = ""
        retry = True
        try:
            target = self.policy.resolve(delivery.url)
            timestamp = int(self._clock())
            headers = signed_headers(delivery.secret, timestamp, delivery.body, delivery.event_id, delivery.attempt)
            response = pinned_request(self._client, target, delivery.body, headers, self.timeout_s)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"the receiver answered {status}"
        except InvalidInput as exc:
            error, retry = f"refused: {exc.message}", False
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        delivered = not error
        last = delivered or not retry or delivery.attempt >= self.attempts
        outcome = "delivered" if delivered else ("failed" if last else "pending")
        with self.db.write() as s:
            s.add(
                AlertDelivery(
                    event_id=delivery.event_id, attempt=delivery.attempt, status_code=status, error=error[:_MAX_ERROR]
                )
            )
            event = s.get(AlertEvent, delivery.event_id)
            if event is not None:
                event.delivery = outcome
        if not last:
            self.submit(delivery, min(MAX_BACKOFF_S, self.backoff_s * 2 ** (delivery.attempt - 1)))
        elif not delivered:
            log.warning(
                "alert event %d: webhook not delivered after %d attempt(s): %s",
                delivery.event_id,
                delivery.attempt,
                error,
            )
