"""The inference log and the metrics history under /api/v1: per model and per endpoint log settings, the log
(paged JSON, or an export as JSON Lines or Parquet) and metrics series. Everything is scoped to the caller's
project: another project's model or endpoint is not found (404)."""

from __future__ import annotations

import io
import math
import re
import time
from datetime import UTC
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from stratus.api.auth import ScopedRoute, caller_of
from stratus.api.bounds import Moment, Name
from stratus.api.deps import platform
from stratus.api.host import ControlHost
from stratus.api.responses import JSONBody
from stratus.errors import InvalidInput
from stratus.monitoring.history import COARSE, COARSE_KEEP, METRICS
from stratus.monitoring.log_format import LogRecord
from stratus.monitoring.policy import LogPolicy, Scope

router = APIRouter(prefix="/api/v1", tags=["monitoring"], route_class=ScopedRoute)

_DURATION = re.compile(r"^(\d{1,7})(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_PATTERN = _DURATION.pattern
#: Status filter: ok, error, or an HTTP status.
STATUS_PATTERN = r"^(ok|error|[1-5][0-9][0-9])$"
CURSOR_PATTERN = r"^[0-9]{1,18}\.[0-9]{1,9}$"
EXPORT_LIMIT = 100_000
KEPT_SECONDS = COARSE_KEEP + COARSE


def parse_duration(text: str) -> float:
    """Seconds of ``30s``, ``15m``, ``1h`` or ``7d``."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidInput(f"a duration is a number and s, m, h or d (such as 15m or 1h), not {text[:40]!r}")
    return int(match.group(1)) * _UNIT[match.group(2)]


class LoggingUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    mode: Literal["off", "sampled", "all"] = Field(description="off, sampled (a share: rate) or all requests")
    rate: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False, description="Share kept when sampled")
    payloads: bool = Field(default=False, description="Keep the input and output tensors (masked)")


def _check_target(plat: ControlHost, scope: Scope, name: str) -> None:
    """404 unless the caller's project has that model or endpoint."""
    if scope == "model":
        plat.registry.get_model(name)
    else:
        plat.endpoints.get(name)


def _logging(plat: ControlHost, project: str, scope: Scope, name: str) -> dict[str, Any]:
    policy, source = plat.log_settings.get(project, scope, name)
    return {"scope": scope, "name": name, **policy.to_dict(), "source": source}


def _get_logging(request: Request, scope: Scope, name: str) -> dict[str, Any]:
    plat = platform(request)
    _check_target(plat, scope, name)
    return _logging(plat, caller_of(request).project, scope, name)


def _put_logging(request: Request, scope: Scope, name: str, body: LoggingUpdate) -> dict[str, Any]:
    plat = platform(request)
    _check_target(plat, scope, name)
    project = caller_of(request).project
    plat.log_settings.set(project, scope, name, LogPolicy(body.mode, body.rate, body.payloads))
    return _logging(plat, project, scope, name)


@router.get("/models/{name}/logging")
def get_model_logging(request: Request, name: Name) -> dict[str, Any]:
    """What the inference log keeps of this model's requests (``source``: its own setting or the default)."""
    return _get_logging(request, "model", name)


@router.put("/models/{name}/logging")
def set_model_logging(request: Request, name: Name, body: LoggingUpdate) -> dict[str, Any]:
    return _put_logging(request, "model", name, body)


@router.delete("/models/{name}/logging")
def reset_model_logging(request: Request, name: Name) -> dict[str, Any]:
    """Back to the server's default."""
    return _reset_logging(request, "model", name)


@router.get("/endpoints/{name}/logging")
def get_endpoint_logging(request: Request, name: Name) -> dict[str, Any]:
    return _get_logging(request, "endpoint", name)


@router.put("/endpoints/{name}/logging")
def set_endpoint_logging(request: Request, name: Name, body: LoggingUpdate) -> dict[str, Any]:
    return _put_logging(request, "endpoint", name, body)


@router.delete("/endpoints/{name}/logging")
def reset_endpoint_logging(request: Request, name: Name) -> dict[str, Any]:
    return _reset_logging(request, "endpoint", name)


def _reset_logging(request: Request, scope: Scope, name: str) -> dict[str, Any]:
    plat = platform(request)
    _check_target(plat, scope, name)
    plat.log_settings.set(caller_of(request).project, scope, name, None)
    return _logging(plat, caller_of(request).project, scope, name)


def _window(since: str | None, start: Any, end: Any, now: float | None = None) -> tuple[float | None, float | None]:
    begin = (now or time.time()) - parse_duration(since) if since is not None else None
    if start is not None:  # with both, the later bound holds
        begin = max(begin or -math.inf, start.replace(tzinfo=UTC).timestamp())
    finish = end.replace(tzinfo=UTC).timestamp() if end is not None else None
    return begin, finish


Since = Annotated[str | None, Query(pattern=DURATION_PATTERN, max_length=12, description="e.g. 15m, 1h, 7d")]
Status = Annotated[str | None, Query(pattern=STATUS_PATTERN, description="ok, error or an HTTP status")]
Before = Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="a record id: continue after it")]
Version = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
Limit = Annotated[int | None, Query(ge=1, le=EXPORT_LIMIT, description="records (default 100 a page, 10,000 exported)")]
Format = Annotated[Literal["json", "jsonl", "parquet"], Query(description="json (paged), jsonl or parquet")]


async def _log(
    request: Request,
    scope: Scope,
    name: str,
    since: str | None,
    start: Any,
    end: Any,
    version: int | None,
    status: str | None,
    limit: int | None,
    before: str | None,
    fmt: str,
) -> Response:
    plat = platform(request)
    await run_in_threadpool(_check_target, plat, scope, name)
    begin, finish = _window(since, start, end)
    project = caller_of(request).project
    filters: dict[str, Any] = {scope: name, "version": version, "status": status, "start": begin, "end": finish}
    filters["before"] = before
    if fmt == "json":
        records, cursor = await run_in_threadpool(plat.inference_log.query, project, limit=limit or 100, **filters)
        return JSONBody({"records": [r.to_dict() for r in records], "next": cursor})
    records = await run_in_threadpool(_collect, plat, project, filters, limit or 10_000)
    if fmt == "jsonl":
        body = b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in records)
        return Response(body, media_type="application/x-ndjson")
    return Response(await run_in_threadpool(to_parquet, records), media_type="application/vnd.apache.parquet")


def _collect(plat: ControlHost, project: str, filters: dict[str, Any], limit: int) -> list[LogRecord]:
    found: list[LogRecord] = []
    for record in plat.inference_log.records(project, **filters):
        found.append(record)
        if len(found) >= limit:
            break
    return found


def to_parquet(records: list[LogRecord]) -> bytes:
    """One row per record; the tensors as JSON text (their shapes differ from model to model)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [r.to_dict() for r in records]
    table = pa.table(
        {
            "id": pa.array([r["id"] for r in rows], pa.string()),
            "at": pa.array([int(r.at * 1_000_000) for r in records], pa.timestamp("us", tz="UTC")),
            "project": pa.array([r["project"] for r in rows], pa.string()),
            "key_id": pa.array([r["key_id"] for r in rows], pa.string()),
            "model": pa.array([r["model"] for r in rows], pa.string()),
            "version": pa.array([r["version"] for r in rows], pa.int32()),
            "endpoint": pa.array([r["endpoint"] for r in rows], pa.string()),
            "protocol": pa.array([r["protocol"] for r in rows], pa.string()),
            "latency_ms": pa.array([r["latency_ms"] for r in rows], pa.float64()),
            "status": pa.array([r["status"] for r in rows], pa.int32()),
            "error": pa.array([r["error"] for r in rows], pa.string()),
            "batch_size": pa.array([r["batch_size"] for r in rows], pa.int64()),
            "inputs": pa.array([None if r["inputs"] is None else orjson.dumps(r["inputs"]).decode() for r in rows]),
            "outputs": pa.array([None if r["outputs"] is None else orjson.dumps(r["outputs"]).decode() for r in rows]),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@router.get("/models/{name}/log")
async def model_log(
    request: Request,
    name: Name,
    since: Since = None,
    start: Moment | None = None,
    end: Moment | None = None,
    version: Version = None,
    status: Status = None,
    limit: Limit = None,
    before: Before = None,
    format: Format = "json",
) -> Response:
    """The model's logged requests, newest first (through its endpoints too). ``next`` continues the list."""
    return await _log(request, "model", name, since, start, end, version, status, limit, before, format)


@router.get("/endpoints/{name}/log")
async def endpoint_log(
    request: Request,
    name: Name,
    since: Since = None,
    start: Moment | None = None,
    end: Moment | None = None,
    version: Version = None,
    status: Status = None,
    limit: Limit = None,
    before: Before = None,
    format: Format = "json",
) -> Response:
    """The endpoint's logged requests, newest first."""
    return await _log(request, "endpoint", name, since, start, end, version, status, limit, before, format)


_METRIC_LIST = rf"^(?:{'|'.join(METRICS)})(?:,(?:{'|'.join(METRICS)}))*$"


@router.get("/metrics/series")
async def metrics_series(
    request: Request,
    name: Name,
    metric: Annotated[str, Query(pattern=_METRIC_LIST, max_length=400, description=", ".join(METRICS))],
    scope: Literal["model", "endpoint"] = "model",
    since: Since = None,
    start: Moment | None = None,
    end: Moment | None = None,
    step: Annotated[int, Query(ge=10, le=86400, description="seconds per point")] = 60,
    version: Version = None,
) -> JSONBody:
    """A model's (all versions, or one) or an endpoint's metrics over time, one value per step (null where
    there is nothing to compute from): 10 s resolution for the last 24 hours, 5 minutes for 30 days."""
    plat = platform(request)
    await run_in_threadpool(_check_target, plat, scope, name)
    now = time.time()
    begin, finish = _window(since if since is not None or start is not None else "1h", start, end, now)
    finish = now if finish is None else finish
    assert begin is not None
    begin = max(begin, now - KEPT_SECONDS)  # nothing older is kept
    metrics = metric.split(",")
    series = await run_in_threadpool(
        plat.history.many, caller_of(request).project, scope, name, metrics, begin, finish, float(step), version
    )
    return JSONBody(
        {
            "scope": scope,
            "name": name,
            "version": version,
            "start": begin,
            "end": finish,
            "step": step,
            "series": {m: [[t, v] for t, v in points] for m, points in series.items()},
        }
    )
