"""Federated learning's control routes (docs/federated.md): create a federated job, make a client key bound to it,
and join it with such a key (the answer is where the job's Flower server listens and the client's token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from stratus.api.auth import ScopedRoute
from stratus.api.bounds import JobId
from stratus.api.deps import platform
from stratus.api.json_body import json_object
from stratus.api.openapi import json_body
from stratus.federated.service import FederatedRequest, JoinRequest

router = APIRouter(prefix="/api/v1/federated", tags=["federated"], route_class=ScopedRoute)


@router.post("/jobs", status_code=201, openapi_extra=json_body(FederatedRequest))
async def create_federated_job(request: Request) -> dict[str, Any]:
    """A federated job: {"model", "classes", "features" | "image_shape", "rounds"?, "min_clients"?, ...}."""
    body = json_object(await request.body())
    return await run_in_threadpool(platform(request).federated.submit, body)


@router.post("/jobs/{job_id}/keys", status_code=201)
def create_federated_key(request: Request, job_id: JobId) -> dict[str, Any]:
    """A key of the ``federated`` role bound to this job (shown once): it can join this job and nothing else."""
    return platform(request).federated.create_key(job_id)


@router.post("/jobs/{job_id}/join", openapi_extra=json_body(JoinRequest))
async def join_federated_job(request: Request, job_id: JobId) -> dict[str, Any]:
    """Join with a key bound to this job: {"client", "features" | "image_shape", "classes"}; returns the job's server
    address and this client's token."""
    body = json_object(await request.body())
    return await run_in_threadpool(platform(request).federated.join, job_id, body)
