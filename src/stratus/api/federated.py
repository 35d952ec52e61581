"""Federated learning's control routes (docs/federated.md): create a federated job, make a client key bound to it,
and join it with such a key (the answer is where the job's Flower server listens and the client's token)."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from stratus.api.auth import ScopedRoute
from stratus.api.bounds import JobId
from stratus.api.deps import platform
from stratus.api.json_body import json_object
from stratus.api.openapi import json_body, model_schema
from stratus.federated.service import CREATE_RULES, JOIN_RULES, FederatedRequest, JoinRequest
from stratus.training.params import TrainParams

router = APIRouter(prefix="/api/v1/federated", tags=["federated"], route_class=ScopedRoute)

_FEATURES = {"type": "integer", "minimum": 1, "maximum": 100_000}
_IMAGE_SHAPE = {
    "type": "array",
    "items": {"type": "integer", "minimum": 1, "maximum": 4096},
    "minItems": 3,
    "maxItems": 3,
}
_CLASS = {"type": "string", "minLength": 1, "maxLength": 256}


def _params_schema() -> dict[str, Any]:
    """Central training's parameters, but scaling standard or none: the federation's statistics are sums."""
    schema = copy.deepcopy(model_schema(TrainParams))
    schema["properties"]["scaling"] = {"type": "string", "enum": ["standard", "none"], "default": "standard"}
    # TrainParams' own rule across fields: a DP delta belongs to a DP budget (docs/privacy.md).
    schema["allOf"] = [
        {
            "if": {"properties": {"dp_delta": {"type": "number"}}, "required": ["dp_delta"]},
            "then": {"properties": {"dp_epsilon": {"type": "number"}}, "required": ["dp_epsilon"]},
        }
    ]
    return schema


def _body(model: type[BaseModel], rules: dict[str, Any], replace: dict[str, Any]) -> dict[str, Any]:
    """The model's schema with what its validator checks across fields stated (one shape; a cnn takes images)."""
    extra = json_body(model, replace=replace)
    extra["requestBody"]["content"]["application/json"]["schema"].update(rules)
    return extra


_CREATE_BODY = _body(
    FederatedRequest,
    CREATE_RULES,
    {
        "features": _FEATURES,
        "image_shape": _IMAGE_SHAPE,
        "classes": {"type": "array", "items": _CLASS, "minItems": 2, "maxItems": 10_000, "uniqueItems": True},
        "params": _params_schema(),
    },
)
_JOIN_BODY = _body(
    JoinRequest,
    JOIN_RULES,
    {
        "features": _FEATURES,
        "image_shape": _IMAGE_SHAPE,
        "classes": {"type": "array", "items": _CLASS, "minItems": 1, "maxItems": 10_000},
    },
)


@router.post("/jobs", status_code=201, openapi_extra=_CREATE_BODY)
async def create_federated_job(request: Request) -> dict[str, Any]:
    """A federated job: {"model", "classes", "features" | "image_shape", "rounds"?, "min_clients"?, ...}."""
    body = json_object(await request.body())
    return await run_in_threadpool(platform(request).federated.submit, body)


@router.post("/jobs/{job_id}/keys", status_code=201)
def create_federated_key(request: Request, job_id: JobId) -> dict[str, Any]:
    """A key of the ``federated`` role bound to this job (shown once): it can join this job and nothing else."""
    return platform(request).federated.create_key(job_id)


@router.post("/jobs/{job_id}/join", openapi_extra=_JOIN_BODY)
async def join_federated_job(request: Request, job_id: JobId) -> dict[str, Any]:
    """Join with a key bound to this job: {"client", "features" | "image_shape", "classes"}; returns the job's server
    address and this client's token."""
    body = json_object(await request.body())
    return await run_in_threadpool(platform(request).federated.join, job_id, body)
