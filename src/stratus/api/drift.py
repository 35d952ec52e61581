"""Drift: /api/v1/models/{name}/drift, /api/v1/endpoints/{name}/drift, their history, and a version's reference."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from stratus.api.auth import ScopedRoute
from stratus.api.bounds import Moment, Name, ShortText, VersionNumber, VersionRef
from stratus.api.deps import platform
from stratus.errors import InvalidInput
from stratus.types import V2_TO_NUMPY

router = APIRouter(prefix="/api/v1", tags=["drift"], route_class=ScopedRoute)

Last = Annotated[int | None, Query(ge=1, le=100_000, description="the window: the last N logged input rows")]
Minutes = Annotated[
    float | None, Query(gt=0, le=43_200, description="the window: the rows logged in the last T minutes")
]
Limit = Annotated[int, Query(ge=1, le=1000)]
#: Rows of the reference sample run through the model at once, for its evaluation-time outputs.
_OUTPUT_BATCH = 256


@router.get("/models/{name}/drift")
def model_drift(
    request: Request,
    name: Name,
    version: Annotated[VersionRef | None, Query(description="a number or alias; default: the one served")] = None,
    last: Last = None,
    minutes: Minutes = None,
) -> dict[str, Any]:
    """Each feature of the version's reference against the window of its logged inputs (payload capture on)."""
    return platform(request).drift.model_report(name, version, last=last, minutes=minutes)


@router.get("/endpoints/{name}/drift")
def endpoint_drift(request: Request, name: Name, last: Last = None, minutes: Minutes = None) -> dict[str, Any]:
    """One report per version the endpoint routes to, each against its own reference."""
    return platform(request).drift.endpoint_report(name, last=last, minutes=minutes)


@router.get("/models/{name}/drift/history")
def model_drift_history(
    request: Request,
    name: Name,
    version: Annotated[VersionNumber | None, Query()] = None,
    since: Annotated[Moment | None, Query()] = None,
    limit: Limit = 1000,
) -> dict[str, Any]:
    """The stored drift reports of a model (the time series), oldest first."""
    host = platform(request)
    host.registry.get_model(name)  # another project's model, or none: 404
    return {"points": host.drift.series(model=name, version=version, since=since, limit=limit)}


@router.get("/endpoints/{name}/drift/history")
def endpoint_drift_history(
    request: Request, name: Name, since: Annotated[Moment | None, Query()] = None, limit: Limit = 1000
) -> dict[str, Any]:
    host = platform(request)
    host.endpoints.get(name)  # another project's endpoint, or none: 404
    return {"points": host.drift.series(endpoint=name, since=since, limit=limit)}


@router.get("/models/{name}/versions/{version}/reference")
def get_reference(request: Request, name: Name, version: VersionNumber) -> dict[str, Any]:
    """What the version's drift reference holds (never its rows)."""
    host = platform(request)
    return host.drift.describe_reference(host.drift.reference(host.registry.get_version(name, version)))


@router.put("/models/{name}/versions/{version}/reference")
async def upload_reference(
    request: Request,
    name: Name,
    version: VersionNumber,
    # Optional in the signature so a missing version is a 404 before a missing file is a 400.
    file: Annotated[UploadFile | None, File(description="CSV or NPZ with the model's input features")] = None,
    format: Annotated[Literal["csv", "npz", "images"] | None, Form()] = None,
    target: Annotated[ShortText | None, Form(description="a CSV column that is not an input (the label)")] = None,
) -> dict[str, Any]:
    """A reference dataset for a version registered from outside (or to replace the training one): sampled,
    run through the model for its outputs, and stored sealed with the version."""
    host = platform(request)
    info = await run_in_threadpool(host.registry.get_version, name, version)
    if file is None:
        raise InvalidInput("send the reference dataset as the multipart field 'file' (CSV or NPZ)")
    data = await file.read()
    reference, tensors = await run_in_threadpool(
        host.datasets.uploaded_reference, info, data, filename=file.filename, format=format, target=target
    )
    output = reference.layout.output
    if output is not None:
        dtypes = {t.name: V2_TO_NUMPY.get(t.datatype) for t in info.signature.inputs}
        feeds = {k: v.astype(dtypes[k]) if dtypes.get(k) is not None else v for k, v in tensors.items()}
        rows = len(next(iter(feeds.values())))
        parts = []
        for start in range(0, rows, _OUTPUT_BATCH):
            batch = {k: v[start : start + _OUTPUT_BATCH] for k, v in feeds.items()}
            result = await host.dataplane.run_version(info, batch, [output])
            parts.append(np.asarray(result[output]).reshape(len(batch[next(iter(batch))]), -1)[:, 0])
        reference.outputs = np.concatenate(parts) if parts else None
    return await run_in_threadpool(host.drift.attach_reference, name, version, reference)
