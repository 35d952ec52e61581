"""The inference log: who called which model version, when, how it went, and (when asked) the tensors.

Off the hot path. For each inference the data plane calls ``observe`` on the event loop: one policy lookup
(monitoring/policy.py), a sampling draw and an append to a bounded queue. When the queue is full the record
is dropped and counted (``stratus_inference_log_dropped_total``); the request never waits and never fails.
A writer thread drains the queue every 50 ms, a few records at a time, masks the tensors
(security/masking.py) and groups the records by (project, model, endpoint) into pages; every ``flush_seconds``
(or when a page is full) it seals each page as one AES-GCM message bound to that triple and inserts them in
one transaction. A page is one row, so ``kill -9`` leaves each page whole or
absent: there is no torn record to read. The writer also enforces retention (age, then total size).

Reading (``query``, ``records``, ``inputs``) opens the pages newest first and filters their records.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from datetime import UTC
from typing import Any

import numpy as np
import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import delete, func, insert, select

from stratus.dataplane import InferenceEvent
from stratus.errors import InvalidInput
from stratus.monitoring.log_format import (
    VALUES_LIMIT,
    LogRecord,
    Page,
    matches,
    parse_cursor,
    slow_tensor,
    to_record,
)
from stratus.monitoring.policy import LogSettings
from stratus.security.masking import PayloadSeal
from stratus.store import Database
from stratus.store.tables import InferenceLogKey, InferenceLogPage, PayloadLogEntry

log = logging.getLogger(__name__)

#: A data key seals the pages written in this many seconds, then a new one is made.
KEY_SECONDS = 300.0
_PAGES_PER_READ = 32
_RETAIN_SECONDS = 10.0
#: Records per page at most (one AES-GCM message), and per stretch of the writer's work between two yields.
PAGE_RECORDS = 512
_CHUNK = 16
#: How often the writer moves queued records into pages (it stores them every ``flush_seconds``, or sooner
#: when a page is full).
_TICK_SECONDS = 0.05
#: What a query's ``status`` may be besides a number.
STATUS_CLASSES = ("ok", "error")

DropHook = Callable[[str, str, str], None]
#: What the hot path queues: at, project, key id, model, version, endpoint, protocol, seconds, status, error,
#: items, inputs and outputs (None without payloads).
Queued = tuple[Any, ...]


def _yield() -> None:
    """Let the event loop's thread take the GIL: the writer works in short stretches, so a request waits
    for it well under a millisecond instead of a switch interval (5 ms) each time it lets go."""
    time.sleep(0)


def _context(project: str, model: str, endpoint: str) -> bytes:
    return f"inference-log\0{project}\0{model}\0{endpoint}".encode()


class InferenceLog:
    def __init__(
        self,
        db: Database,
        seal: PayloadSeal,
        settings: LogSettings,
        *,
        queue_size: int = 10_000,
        flush_seconds: float = 0.5,
        max_age_seconds: float = 7 * 86400.0,
        max_bytes: int = 1 << 30,
        mask_fields: Collection[str] = (),
        registry: CollectorRegistry | None = None,
        on_drop: DropHook | None = None,
    ) -> None:
        self.db = db
        self.seal = seal
        self.settings = settings
        self.capacity = queue_size
        self.flush_seconds = flush_seconds
        self.max_age_seconds = max_age_seconds
        self.max_bytes = max_bytes
        self.mask_fields = frozenset(f.lower() for f in mask_fields)
        self._queue: deque[Queued] = deque()
        self._dropped = Counter(
            "stratus_inference_log_dropped",
            "Inference log records dropped because the log's queue was full (the requests were served).",
            ["model", "endpoint", "project"],
            registry=registry,
        )
        self._drop_series: dict[tuple[str, str, str], Any] = {}
        self._on_drop = on_drop
        self._flush_lock = threading.Lock()
        #: Pages being filled, by (project, model, endpoint), and full pages waiting to be stored.
        self._filling: dict[tuple[str, str, str], Page] = {}
        self._full: list[tuple[tuple[str, str, str], Page]] = []
        self._key: tuple[int, AESGCM, float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retained_at = 0.0
        self.written = 0

    # -- the hot path ---------------------------------------------------------------------------------------

    def observe(self, event: InferenceEvent) -> None:
        """Called by the data plane for every inference, on the event loop: never blocks, never raises."""
        policy = self.settings.effective(event.caller.project, event.model, event.endpoint)
        mode = policy.mode
        if mode == "off" or (mode == "sampled" and random.random() >= policy.rate):
            return
        queue = self._queue
        if len(queue) >= self.capacity:
            self._drop(event)
            return
        # A flat tuple of strings, numbers and the tensor dicts (which hold only arrays): the garbage
        # collector untracks it at its first pass, so the thousands of records waiting for the writer are
        # never promoted and walked by full collections (the event, holding the Caller, would be).
        caller, payloads = event.caller, policy.payloads
        queue.append(
            (
                event.at,
                caller.project,
                caller.key_id,
                event.model,
                event.version,
                event.endpoint,
                event.protocol,
                event.seconds,
                event.status,
                event.error,
                event.items,
                event.inputs if payloads else None,
                event.outputs if payloads else None,
            )
        )

    def _drop(self, event: InferenceEvent) -> None:
        key = (event.model, event.endpoint, event.caller.project)
        series = self._drop_series.get(key)
        if series is None:
            series = self._drop_series[key] = self._dropped.labels(*key)
        series.inc()
        if self._on_drop is not None:
            self._on_drop(event.caller.project, event.model, event.endpoint)

    def dropped_total(self) -> float:
        return float(sum(s._value.get() for s in list(self._drop_series.values())))

    # -- the writer -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self.absorb_payload_log()
        self._thread = threading.Thread(target=self._run, name="stratus-inference-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        written_at = time.monotonic()
        while not self._stop.wait(_TICK_SECONDS):
            try:
                with self._flush_lock:
                    self._take()
                    now = time.monotonic()
                    everything = now - written_at >= self.flush_seconds
                    if everything or self._full:
                        self._write_pages(everything=everything)
                    if everything:
                        written_at = now
                self.settings.refresh_if_stale()
                if time.monotonic() - self._retained_at >= _RETAIN_SECONDS:
                    self.retain()
                    self._retained_at = time.monotonic()
            except Exception:  # the writer must outlive a bad moment of the DB
                log.exception("the inference log writer failed a round")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def flush(self) -> int:
        """Store everything queued and assembled now; returns how many records."""
        with self._flush_lock:
            self._take()
            return self._write_pages(everything=True)

    def _take(self) -> None:
        """Move what is queued into the open pages, encoding records a few at a time.

        The writer runs every ``_TICK_SECONDS`` (not every ``flush_seconds``) so that its work comes in small
        pieces: between two yields it holds the GIL for ``_CHUNK`` records, so the event loop, which gives the
        GIL up at every system call, waits for the writer tens of microseconds at most."""
        queue, pages, full = self._queue, self._filling, self._full
        now = time.monotonic()
        for _ in range(len(queue)):
            event = queue.popleft()
            key = (event[1], event[3], event[5])
            page = pages.get(key)
            if page is None:
                page = pages[key] = Page(now)
            page.add(self._record(event, page))
            if len(page.pending) >= _CHUNK:
                page.encode_pending()
                _yield()
            if page.count >= PAGE_RECORDS:
                page.encode_pending()
                full.append((key, pages.pop(key)))
        for page in pages.values():
            page.encode_pending()

    def _write_pages(self, *, everything: bool) -> int:
        """Store the full pages, and with ``everything`` the open ones too; returns how many records."""
        due = self._full
        self._full = []
        if everything:
            due = due + list(self._filling.items())
            self._filling = {}
        if not due:
            return 0
        try:
            self._write(due)
        except Exception:
            # Keep the pages for the next round (the DB may be back), as many records as the queue holds.
            kept, room = [], self.capacity
            for key, page in reversed(due + self._full):
                if page.count > room:
                    break
                kept.append((key, page))
                room -= page.count
            self._full = kept[::-1]
            raise
        count = sum(page.count for _, page in due)
        self.written += count
        return count

    def _record(self, queued: Queued, page: Page) -> tuple[Any, ...]:
        """A record as a tuple (untracked by the garbage collector, like what was queued)."""
        at, _, key_id, _, version, _, protocol, seconds, status, error, items, inputs, outputs = queued
        return (
            at,
            key_id,
            version,
            protocol,
            round(seconds * 1000.0, 4),
            status,
            error,
            items,
            None if inputs is None else self._tensors(inputs, page.ins),
            None if outputs is None else self._tensors(outputs, page.outs),
        )

    def _tensors(self, tensors: dict[str, Any], dtypes: dict[str, np.dtype[Any]]) -> dict[str, Any]:
        """The common case costs a few checks: numeric tensors of the dtype the page knows for their names are
        kept as they are, and orjson writes the arrays (in C). Anything else goes tensor by tensor."""
        if not self.mask_fields:
            for name, array in tensors.items():
                dtype = array.dtype
                if dtype.kind not in "biuf" or not 0 < array.size <= VALUES_LIMIT or array.ndim == 0:
                    break
                known = dtypes.get(name)
                if known is None:
                    dtypes[name] = dtype
                elif known != dtype:
                    break
            else:
                return tensors
        return self._each(tensors)

    def _each(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """Tensor by tensor: masked, [dtype, shape, array] for numbers, or the slow form (text, long)."""
        out: dict[str, Any] = {}
        masked = self.mask_fields
        for name, array in tensors.items():
            if masked and name.lower() in masked:
                out[name] = {"masked": True}
            elif array.dtype.kind in "biuf" and array.size <= VALUES_LIMIT:
                out[name] = [array.dtype.str, array.shape, array]
            else:
                out[name] = slow_tensor(np.asarray(array))
        return out

    def _data_key(self, session: Any) -> tuple[int, AESGCM]:
        now = time.monotonic()
        if self._key is None or now - self._key[2] >= KEY_SECONDS:
            key_ref, aead = self.seal.new_key(session)
            self._key = (key_ref, aead, now)
        return self._key[0], self._key[1]

    def _write(self, pages: list[tuple[tuple[str, str, str], Page]]) -> None:
        rows = []
        for (project, model, endpoint), page in pages:
            rows.append((project, model, endpoint, page.first_at, page.last_at, page.count, page.encoded()))
            _yield()
        try:
            with self.db.write() as s:
                key_ref, aead = self._data_key(s)
                values = []
                for project, model, endpoint, first, last, count, plain in rows:
                    nonce, data = self.seal.seal(aead, plain, _context(project, model, endpoint))
                    values.append(
                        {
                            "project": project,
                            "model": model,
                            "endpoint": endpoint,
                            "first_at": min(first, last),
                            "last_at": max(first, last),
                            "count": count,
                            "key_ref": key_ref,
                            "nonce": nonce,
                            "data": data,
                            "size": len(data),
                        }
                    )
                s.execute(insert(InferenceLogPage), values)
        except Exception:
            self._key = None  # its row may have rolled back with the pages
            raise

    def retain(self, now: float | None = None) -> int:
        """Delete pages older than the age limit, then the oldest pages until the total is under the size
        limit, then the data keys no page uses. Returns how many pages went."""
        now = time.time() if now is None else now
        removed = 0
        with self.db.write() as s:
            old = delete(InferenceLogPage).where(InferenceLogPage.last_at < now - self.max_age_seconds)
            removed += _rowcount(s.execute(old))
            total = s.scalar(select(func.coalesce(func.sum(InferenceLogPage.size), 0))) or 0
            if total > self.max_bytes:
                excess, cut = total - self.max_bytes, None
                for page_id, size in s.execute(
                    select(InferenceLogPage.id, InferenceLogPage.size).order_by(InferenceLogPage.id)
                ):
                    excess -= size
                    cut = page_id
                    if excess <= 0:
                        break
                if cut is not None:
                    removed += _rowcount(s.execute(delete(InferenceLogPage).where(InferenceLogPage.id <= cut)))
            if removed:
                used = select(InferenceLogPage.key_ref).distinct()
                current = self._key[0] if self._key is not None else -1
                s.execute(delete(InferenceLogKey).where(InferenceLogKey.id.not_in(used), InferenceLogKey.id != current))
        return removed

    def absorb_payload_log(self) -> int:
        """Move the rows the payload log (this log's predecessor) wrote into pages; returns how many."""
        with self.db.read() as s:
            entries = list(s.scalars(select(PayloadLogEntry).order_by(PayloadLogEntry.id)))
        if not entries:
            return 0
        grouped: dict[tuple[str, str, str], Page] = {}
        for entry in entries:
            payload = self.seal.open_legacy(entry)
            inputs = {
                name: {"dtype": "<f8", "shape": value.get("shape", []), "data": value.get("data")}
                for name, value in payload.items()
                if isinstance(value, dict)
            }
            first: dict[str, Any] = next(iter(inputs.values()), {"shape": []})
            at = entry.at.replace(tzinfo=UTC).timestamp()
            items = int(first["shape"][0]) if first["shape"] else 1
            record = (at, entry.key_id, 0, entry.protocol, 0.0, 200, "", items, inputs, None)
            grouped.setdefault((entry.project, entry.model, ""), Page()).add(record)
        with self._flush_lock:
            self._write(list(grouped.items()))
        with self.db.write() as s:
            s.execute(delete(PayloadLogEntry).where(PayloadLogEntry.id <= entries[-1].id))
        log.info("moved %d payload log entries into the inference log", len(entries))
        return len(entries)

    # -- reading --------------------------------------------------------------------------------------------

    def records(
        self,
        project: str,
        *,
        model: str | None = None,
        endpoint: str | None = None,
        version: int | None = None,
        status: str | int | None = None,
        start: float | None = None,
        end: float | None = None,
        before: str | None = None,
    ) -> Iterator[LogRecord]:
        """Matching records, newest first (by page, then by time within a page)."""
        if (model is None) == (endpoint is None):
            raise InvalidInput("ask for the log of a model or of an endpoint")
        self.flush()
        page_before, index_before = parse_cursor(before)
        query = select(InferenceLogPage).where(InferenceLogPage.project == project)
        if model is not None:
            query = query.where(InferenceLogPage.model == model)
        else:
            query = query.where(InferenceLogPage.endpoint == endpoint)
        if start is not None:
            query = query.where(InferenceLogPage.last_at >= start)
        if end is not None:
            query = query.where(InferenceLogPage.first_at <= end)
        last_id = page_before + 1 if page_before is not None else None
        while True:
            chunk = query if last_id is None else query.where(InferenceLogPage.id < last_id)
            with self.db.read() as s:
                pages = list(s.scalars(chunk.order_by(InferenceLogPage.id.desc()).limit(_PAGES_PER_READ)))
            if not pages:
                return
            for page in pages:
                rows, dtypes = self._open(page)
                for index in range(len(rows) - 1, -1, -1):
                    if page.id == page_before and index_before is not None and index >= index_before:
                        continue
                    record = to_record(page, index, rows[index], dtypes)
                    if matches(record, version, status, start, end):
                        yield record
            last_id = pages[-1].id

    def query(self, project: str, *, limit: int = 100, **filters: Any) -> tuple[list[LogRecord], str | None]:
        """One page of results and the cursor of the next (None at the end)."""
        found: list[LogRecord] = []
        for record in self.records(project, **filters):
            if len(found) == limit:
                return found, found[-1].id
            found.append(record)
        return found, None

    def inputs(
        self,
        project: str,
        model: str,
        version: int | None = None,
        *,
        since: float | None = None,
        limit: int = 1000,
        endpoint: str | None = None,
    ) -> list[dict[str, np.ndarray[Any, Any]]]:
        """The input tensors of the last ``limit`` logged requests (newer than ``since``, a Unix time) of a
        model (or an endpoint, with ``endpoint`` instead of ``model``), newest first, each as arrays of the
        request's shape. Requests logged without payloads, and masked or truncated tensors, are left out."""
        found: list[dict[str, np.ndarray[Any, Any]]] = []
        records = (
            self.records(project, endpoint=endpoint, version=version, start=since, status="ok")
            if endpoint is not None
            else self.records(project, model=model, version=version, start=since, status="ok")
        )
        for record in records:
            arrays = record.arrays("inputs")
            if arrays:
                found.append(arrays)
                if len(found) >= limit:
                    break
        return found

    def _open(self, page: InferenceLogPage) -> tuple[list[list[Any]], tuple[dict[str, str], dict[str, str]]]:
        plain = self.seal.open(
            page.key_ref,
            page.nonce,
            page.data,
            _context(page.project, page.model, page.endpoint),
            f"inference log page {page.id}",
        )
        body = orjson.loads(plain)
        if isinstance(body, list):  # a page written before pages had a header
            return body, ({}, {})
        return body["records"], (body["in"], body["out"])


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
