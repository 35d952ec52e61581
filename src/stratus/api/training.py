"""Control plane for datasets and jobs: /api/v1/datasets and /api/v1/jobs (with an SSE event stream)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from stratus.api.auth import ScopedRoute
from stratus.api.deps import platform
from stratus.jobs import TERMINAL

router = APIRouter(prefix="/api/v1", tags=["training"], route_class=ScopedRoute)


class BuiltinDataset(BaseModel):
    name: str
    builtin: Literal["iris", "wine", "breast_cancer", "digits", "diabetes"] | None = Field(
        default=None, description="default: the same as name"
    )


@router.get("/datasets")
def list_datasets(request: Request) -> dict[str, Any]:
    return {"datasets": platform(request).datasets.list_datasets()}


@router.post("/datasets", status_code=201)
async def upload_dataset(
    request: Request,
    name: Annotated[str, Form()],
    file: Annotated[UploadFile, File(description="CSV, NPZ (X and y) or an image-folder ZIP")],
    format: Annotated[Literal["csv", "npz", "images"] | None, Form()] = None,
    target: Annotated[str | None, Form(max_length=200)] = None,
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
def get_dataset(request: Request, name: str) -> dict[str, Any]:
    return platform(request).datasets.get(name)


@router.delete("/datasets/{name}", status_code=204)
def delete_dataset(request: Request, name: str) -> Response:
    platform(request).datasets.delete(name)
    return Response(status_code=204)


@router.post("/jobs", status_code=201)
def submit_job(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """A training job: {"dataset", "model", "name"?, "params"?, "timeout_s"?, "retries"?}."""
    return platform(request).training.submit(body)


@router.post("/models/{name}/versions/{version}/compress", status_code=201)
def compress_version(request: Request, name: str, version: str, body: dict[str, Any]) -> dict[str, Any]:
    """A compression job: {"methods": [...], "params"?, "accuracy_budget"?, "promote_alias"?, "threads"?}."""
    return platform(request).compression.submit(name, version, body)


@router.get("/jobs")
def list_jobs(request: Request, state: str | None = None) -> dict[str, Any]:
    return {"jobs": platform(request).jobs.list_jobs(state)}


@router.get("/jobs/{job_id}")
def get_job(request: Request, job_id: str) -> dict[str, Any]:
    return platform(request).jobs.get(job_id)


@router.get("/jobs/{job_id}/logs")
def job_logs(request: Request, job_id: str, after: int = 0) -> dict[str, Any]:
    return {"events": platform(request).jobs.events(job_id, after)}


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    return platform(request).jobs.cancel(job_id)


@router.get("/jobs/{job_id}/events")
async def job_events(request: Request, job_id: str) -> StreamingResponse:
    """Server-Sent Events: every event of the job in order, then live ones until it ends."""
    jobs = platform(request).jobs
    await run_in_threadpool(jobs.get, job_id)  # 404 before the stream starts
    after = int(request.headers.get("last-event-id", "0") or 0)

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
