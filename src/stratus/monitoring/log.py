"""The inference log: who called which model version, when, how it went, and (when asked) the tensors.

Off the hot path. For each inference the data plane calls ``observe`` on the event loop: one policy lookup
(monitoring/policy.py), a sampling draw and an append to a bounded queue. When the queue is full the record
is dropped and counted (``stratus_inference_log_dropped_total``); the request never waits and never fails.
A writer thread drains the queue every ``flush_seconds``, masks the tensors (security/masking.py), groups
the records by (project, model, endpoint) into pages, seals each page as one AES-GCM message bound to that
triple and inserts them in one transaction. A page is one row, so ``kill -9`` leaves each page whole or
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import delete, func, insert, select

from stratus.dataplane import InferenceEvent
from stratus.errors import InvalidInput
from stratus.monitoring.policy import LogSettings
from stratus.security.masking import PayloadSeal, mask_text
from stratus.store import Database
from stratus.store.tables import InferenceLogKey, InferenceLogPage, PayloadLogEntry

log = logging.getLogger(__name__)

#: Largest number of values kept per tensor; a longer one is cut and marked ``truncated``.
VALUES_LIMIT = 1000
#: A data key seals the pages written in this many seconds, then a new one is made.
KEY_SECONDS = 300.0
_PAGES_PER_READ = 32
_RETAIN_SECONDS = 10.0
#: Records per page at most (one AES-GCM message), and per stretch of the writer's work between two yields.
PAGE_RECORDS = 512
_CHUNK = 128
#: What a query's ``status`` may be besides a number.
STATUS_CLASSES = ("ok", "error")

DropHook = Callable[[str, str, str], None]


@dataclass(frozen=True)
class LogRecord:
    id: str  #: "<page>.<index>": where a page of results continues (``before``)
    at: float  #: Unix time the request ended
    project: str
    key_id: str
    model: str
    version: int
    endpoint: str
    protocol: str
    latency_ms: float
    status: int
    error: str
    batch_size: int
    inputs: dict[str, Any] | None
    outputs: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": datetime.fromtimestamp(self.at, UTC).isoformat().replace("+00:00", "Z"),
            "project": self.project,
            "key_id": self.key_id,
            "model": self.model,
            "version": self.version,
            "endpoint": self.endpoint,
            "protocol": self.protocol,
            "latency_ms": self.latency_ms,
            "status": self.status,
            "error": self.error,
            "batch_size": self.batch_size,
            "inputs": self.inputs,
            "outputs": self.outputs,
        }

    def arrays(self, which: str = "inputs") -> dict[str, np.ndarray[Any, Any]]:
        """The logged tensors as arrays of their shape; masked and truncated tensors are left out."""
        tensors = self.inputs if which == "inputs" else self.outputs
        out: dict[str, np.ndarray[Any, Any]] = {}
        for name, tensor in (tensors or {}).items():
            if tensor.get("masked") or tensor.get("truncated"):
                continue
            out[name] = np.asarray(tensor["data"], dtype=tensor["dtype"]).reshape(tensor["shape"])
        return out


def _yield() -> None:
    """Let the event loop's thread take the GIL: the writer works in short stretches, so a request waits
    for it well under a millisecond instead of a switch interval (5 ms) each time it lets go."""
    time.sleep(0)


def _slow_tensor(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    flat = array.reshape(-1)
    entry: dict[str, Any] = {"dtype": array.dtype.str if array.dtype.kind not in "OSU" else "str"}
    entry["shape"] = list(array.shape)
    if flat.size > VALUES_LIMIT:
        flat = flat[:VALUES_LIMIT]
        entry["truncated"] = True
    if array.dtype.kind in "OSU":  # text: the patterns (emails, phones, cards) are masked
        entry["data"] = [mask_text(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)) for v in flat]
    elif array.dtype.kind in "biuf":
        entry["data"] = np.ascontiguousarray(flat)
    else:  # complex, datetimes and the like: as text
        entry["data"] = [str(v) for v in flat]
    return entry


class _Page:
    """Records of one (project, model, endpoint) being assembled, with the dtype of each tensor name kept in
    the page once (``ins``, ``outs``) instead of in every record."""

    __slots__ = ("ins", "outs", "records")

    def __init__(self) -> None:
        self.records: list[list[Any]] = []
        self.ins: dict[str, np.dtype[Any]] = {}
        self.outs: dict[str, np.dtype[Any]] = {}

    def encoded(self) -> bytes:
        header = {"in": {n: d.str for n, d in self.ins.items()}, "out": {n: d.str for n, d in self.outs.items()}}
        return orjson.dumps(
            {**header, "records": self.records}, default=_numpy_default, option=orjson.OPT_SERIALIZE_NUMPY
        )


def _opened(tensors: dict[str, Any] | None, dtypes: dict[str, str]) -> dict[str, Any] | None:
    """Tensors as the API gives them: {"dtype", "shape", "data" (flat)}. The writer's forms are spelled out
    here, off the hot path: a bare nested list (its dtype in the page's header), [dtype, shape, nested data],
    or already a dict (masked, truncated or text)."""
    if tensors is None:
        return None
    out: dict[str, Any] = {}
    for name, tensor in tensors.items():
        if isinstance(tensor, dict):
            out[name] = tensor
        elif isinstance(tensor, list) and tensor and isinstance(tensor[0], str):
            dtype, shape, data = tensor
            out[name] = {"dtype": dtype, "shape": list(shape), "data": np.asarray(data).reshape(-1).tolist()}
        else:
            array = np.asarray(tensor)
            out[name] = {"dtype": dtypes[name], "shape": list(array.shape), "data": array.reshape(-1).tolist()}
    return out


def _context(project: str, model: str, endpoint: str) -> bytes:
    return f"inference-log\0{project}\0{model}\0{endpoint}".encode()


def _numpy_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError


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
        self._queue: deque[tuple[InferenceEvent, bool]] = deque()
        self._dropped = Counter(
            "stratus_inference_log_dropped",
            "Inference log records dropped because the log's queue was full (the requests were served).",
            ["model", "endpoint", "project"],
            registry=registry,
        )
        self._drop_series: dict[tuple[str, str, str], Any] = {}
        self._on_drop = on_drop
        self._flush_lock = threading.Lock()
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
        queue.append((event, policy.payloads))

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
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
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
        """Write what is queued now; returns how many records."""
        with self._flush_lock:
            queue = self._queue
            events = [queue.popleft() for _ in range(len(queue))]
            if not events:
                return 0
            pages: list[tuple[tuple[str, str, str], _Page]] = []
            open_pages: dict[tuple[str, str, str], _Page] = {}
            for index, (event, payloads) in enumerate(events):
                key = (event.caller.project, event.model, event.endpoint)
                page = open_pages.get(key)
                if page is None or len(page.records) >= PAGE_RECORDS:
                    page = open_pages[key] = _Page()
                    pages.append((key, page))
                page.records.append(self._record(event, payloads, page))
                if index % _CHUNK == _CHUNK - 1:
                    _yield()
            self._write(pages)
            self.written += len(events)
            return len(events)

    def _record(self, event: InferenceEvent, payloads: bool, page: _Page) -> list[Any]:
        return [
            event.at,
            event.caller.key_id,
            event.version,
            event.protocol,
            round(event.seconds * 1000.0, 4),
            event.status,
            event.error,
            event.items,
            self._tensors(event.inputs, page.ins) if payloads else None,
            self._tensors(event.outputs, page.outs) if payloads and event.outputs is not None else None,
        ]

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
                out[name] = _slow_tensor(np.asarray(array))
        return out

    def _data_key(self, session: Any) -> tuple[int, AESGCM]:
        now = time.monotonic()
        if self._key is None or now - self._key[2] >= KEY_SECONDS:
            key_ref, aead = self.seal.new_key(session)
            self._key = (key_ref, aead, now)
        return self._key[0], self._key[1]

    def _write(self, pages: list[tuple[tuple[str, str, str], _Page]]) -> None:
        rows = []
        for (project, model, endpoint), page in pages:
            records = page.records
            rows.append((project, model, endpoint, records[0][0], records[-1][0], len(records), page.encoded()))
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
        grouped: dict[tuple[str, str, str], _Page] = {}
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
            record = [at, entry.key_id, 0, entry.protocol, 0.0, 200, "", items, inputs, None]
            grouped.setdefault((entry.project, entry.model, ""), _Page()).records.append(record)
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
        page_before, index_before = _cursor(before)
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
                    record = _to_record(page, index, rows[index], dtypes)
                    if _matches(record, version, status, start, end):
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


def _cursor(before: str | None) -> tuple[int | None, int | None]:
    if before is None:
        return None, None
    page, _, index = before.partition(".")
    if not (page.isdigit() and index.isdigit()) or len(before) > 40:
        raise InvalidInput(f"'before' must be a record id such as 12.3, not {before[:40]!r}")
    return int(page), int(index)


def _to_record(
    page: InferenceLogPage, index: int, row: list[Any], dtypes: tuple[dict[str, str], dict[str, str]]
) -> LogRecord:
    at, key_id, version, protocol, latency_ms, status, error, items, inputs, outputs = row
    return LogRecord(
        id=f"{page.id}.{index}",
        at=at,
        project=page.project,
        key_id=key_id,
        model=page.model,
        version=version,
        endpoint=page.endpoint,
        protocol=protocol,
        latency_ms=latency_ms,
        status=status,
        error=error,
        batch_size=items,
        inputs=_opened(inputs, dtypes[0]),
        outputs=_opened(outputs, dtypes[1]),
    )


def _matches(
    record: LogRecord, version: int | None, status: str | int | None, start: float | None, end: float | None
) -> bool:
    if version is not None and record.version != version:
        return False
    if start is not None and record.at < start:
        return False
    if end is not None and record.at > end:
        return False
    if status == "ok":
        return record.status < 400
    if status == "error":
        return record.status >= 400
    return status is None or record.status == int(status)
