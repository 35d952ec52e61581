"""Control plane for datasets and jobs: /api/v1/datasets and /api/v1/jobs (with an SSE event stream)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, get_args

import orjson
from fastapi import APIRouter, File, Form, Header, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from stratus.api.auth import ScopedRoute
from stratus.api.bounds import JobId, JobState, Name, Position, ShortText, VersionRef, parse_int64_text
from stratus.api.deps import platform
from stratus.api.json_body import json_object
from stratus.api.openapi import json_body, model_schema
from stratus.compress.methods import METHODS, PARAMS, CompressRequest
from stratus.errors import InvalidInput
from stratus.jobs import TERMINAL
from stratus.personalize.request import PersonalizeRequest
from stratus.training.params import TrainRequest

router = APIRouter(prefix="/api/v1", tags=["training"], route_class=ScopedRoute)

#: Event ids are sequence numbers; 15 digits keep them JSON-safe and inside int64.
LAST_EVENT_ID_PATTERN = r"^[0-9]{1,15}$"
MAX_EVENT_ID = 10**15 - 1


Builtin = Literal["iris", "wine", "breast_cancer", "digits", "diabetes"]


class BuiltinDataset(BaseModel):
    # Without 'builtin', the name says which data set: the schema states it, so a valid body is an accepted one.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["builtin"], "properties": {"builtin": {"type": "string"}}},
                {"properties": {"name": {"enum": list(get_args(Builtin))}}},
            ]
        }
    )

    name: Name
    builtin: Builtin | None = Field(default=None, description="default: the same as name")


@router.get("/datasets")
def list_datasets(request: Request) -> dict[str, Any]:
    return {"datasets": platform(request).datasets.list_datasets()}


@router.post("/datasets", status_code=201)
async def upload_dataset(
    request: Request,
    name: Annotated[Name, Form()],
    file: Annotated[UploadFile, File(description="CSV, NPZ (X and y) or an image-folder ZIP")],
    format: Annotated[Literal["csv", "npz", "images"] | None, Form()] = None,
    target: Annotated[ShortText | None, Form()] = None,
    missing: Annotated[Literal["error", "impute"], Form()] = "error",
    task: Annotated[Literal["classification", "regression"] | None, Form()] = None,
) -> dict[str, Any]:
    data = await file.read()
    return await run_in_threadpool(
        platform(request).datasets.upload,
        name,
        data,
        filename=file.filename,
        format=format,
        target=target,
        missing=missing,
        task=task,
    )


@router.post("/datasets/builtin", status_code=201)
def register_builtin_dataset(request: Request, body: BuiltinDataset) -> dict[str, Any]:
    return platform(request).datasets.register_builtin(body.name, body.builtin)


@router.get("/datasets/{name}")
def get_dataset(request: Request, name: Name) -> dict[str, Any]:
    return platform(request).datasets.get(name)


@router.delete("/datasets/{name}", status_code=204)
def delete_dataset(request: Request, name: Name) -> Response:
    platform(request).datasets.delete(name)
    return Response(status_code=204)


# The services validate these bodies (400 with their message); the schema publishes their models.
@router.post("/jobs", status_code=201, openapi_extra=json_body(TrainRequest))
async def submit_job(request: Request) -> dict[str, Any]:
    """A training job: {"dataset", "model", "name"?, "params"?, "timeout_s"?, "retries"?}."""
    body = json_object(await request.body())
    return await run_in_threadpool(platform(request).training.submit, body)


_COMPRESS_BODY = json_body(
    CompressRequest,
    replace={
        "methods": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": list(METHODS)}},
        "params": {
            "type": "object",
            "description": "Parameters of some of the methods given",
            "properties": {method: model_schema(model) for method, model in PARAMS.items()},
            "additionalProperties": False,
        },
    },
)


@router.post("/models/{name}/versions/{version}/compress", status_code=201, openapi_extra=_COMPRESS_BODY)
async def compress_version(request: Request, name: Name, version: VersionRef) -> dict[str, Any]:
    """A compression job: {"methods": [...], "params"?, "accuracy_budget"?, "promote_alias"?, "threads"?}."""
    body = json_object(await request.body())
    return await run_in_threadpool(platform(request).compression.submit, name, version, body)


@router.post("/personalize", status_code=201, openapi_extra=json_body(PersonalizeRequest))
async def personalize(request: Request) -> dict[str, Any]:
    """A personalization job (docs/personalize.md): {"base"?, "dataset", "name"?, "params"?, "timeout_s"?}; the
    model it registers belongs to the caller's project only."""
    body = json_object(await request.body())
    return await run_in_threadpool(platform(request).personalize.submit, body)


@router.get("/jobs")
def list_jobs(request: Request, state: JobState | None = None) -> dict[str, Any]:
    return {"jobs": platform(request).jobs.list_jobs(state)}


@router.get("/jobs/{job_id}")
def get_job(request: Request, job_id: JobId) -> dict[str, Any]:
    return platform(request).jobs.get(job_id)


@router.get("/jobs/{job_id}/logs")
def job_logs(request: Request, job_id: JobId, after: Position = 0) -> dict[str, Any]:
    return {"events": platform(request).jobs.events(job_id, after)}


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, job_id: JobId) -> dict[str, Any]:
    return platform(request).jobs.cancel(job_id)


@router.get("/jobs/{job_id}/events")
async def job_events(
    request: Request,
    job_id: JobId,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="Resume after this event (the `id` of the last event received)"),
        WithJsonSchema({"type": "string", "pattern": LAST_EVENT_ID_PATTERN, "maxLength": 15}),
    ] = None,
) -> StreamingResponse:
    """Server-Sent Events: every event of the job in order, then live ones until it ends."""
    # Judged before anything else, so a bad header gets a 400 and never a 200 that is then cut.
    try:
        after = 0 if last_event_id is None else parse_int64_text(last_event_id, "Last-Event-ID", maximum=MAX_EVENT_ID)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    jobs = platform(request).jobs
    await run_in_threadpool(jobs.get, job_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        nonlocal after
        while True:
            events = await run_in_threadpool(jobs.events, job_id, after)
            for event in events:
                after = event["seq"]
                yield f"id: {event['seq']}\nevent: {event['kind']}\ndata: ".encode() + orjson.dumps(event) + b"\n\n"
            state = (await run_in_threadpool(jobs.get, job_id))["state"]
            if state in TERMINAL and not events:
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.2)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
