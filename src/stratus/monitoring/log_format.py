"""The inference log's page format: how the writer encodes records and how they read back.

A page is one JSON document, sealed as one AES-GCM message: ``{"in": {name: dtype}, "out": {...}, "records":
[...]}``. Each record is a list: Unix time, key id, version, protocol, latency in ms, status, error kind,
batch size, inputs, outputs. A record's tensors take one of three forms: a bare nested list (numbers of the
dtype the page names for that tensor: the writer's common case, written by orjson from the array itself),
``[dtype, shape, nested data]``, or a dict (masked, truncated or text). ``LogRecord`` is what readers get:
every tensor as ``{"dtype", "shape", "data"}`` with flat data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from stratus.errors import InvalidInput
from stratus.security.masking import mask_text
from stratus.store.tables import InferenceLogPage

#: Largest number of values kept per tensor; a longer one is cut and marked ``truncated``.
VALUES_LIMIT = 1000


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


def slow_tensor(array: np.ndarray[Any, Any]) -> dict[str, Any]:
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


class Page:
    """Records of one (project, model, endpoint) being assembled, with the dtype of each tensor name kept in
    the page once (``ins``, ``outs``) instead of in every record.

    Records are encoded as they come, a few at a time (``encode_pending``), so the writer never holds the GIL
    for a whole page: the event loop waits for it at most one short stretch. ``encoded`` then only joins."""

    __slots__ = ("chunks", "count", "first_at", "ins", "last_at", "opened_at", "outs", "pending")

    def __init__(self, opened_at: float = 0.0) -> None:
        self.pending: list[tuple[Any, ...]] = []
        self.chunks: list[bytes] = []
        self.count = 0
        self.first_at = self.last_at = 0.0
        self.opened_at = opened_at
        self.ins: dict[str, np.dtype[Any]] = {}
        self.outs: dict[str, np.dtype[Any]] = {}

    def add(self, record: tuple[Any, ...]) -> None:
        """``record[0]`` is its Unix time."""
        if not self.count:
            self.first_at = record[0]
        self.last_at = record[0]
        self.pending.append(record)
        self.count += 1

    def encode_pending(self) -> None:
        if self.pending:
            data = orjson.dumps(self.pending, default=numpy_default, option=orjson.OPT_SERIALIZE_NUMPY)
            self.chunks.append(data[1:-1])  # the records without their list's brackets
            self.pending.clear()

    def encoded(self) -> bytes:
        self.encode_pending()
        header = {"in": {n: d.str for n, d in self.ins.items()}, "out": {n: d.str for n, d in self.outs.items()}}
        return orjson.dumps(header)[:-1] + b',"records":[' + b",".join(self.chunks) + b"]}"


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


def numpy_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError


def parse_cursor(before: str | None) -> tuple[int | None, int | None]:
    if before is None:
        return None, None
    page, _, index = before.partition(".")
    if not (page.isdigit() and index.isdigit()) or len(before) > 40:
        raise InvalidInput(f"'before' must be a record id such as 12.3, not {before[:40]!r}")
    return int(page), int(index)


def to_record(
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


def matches(
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
