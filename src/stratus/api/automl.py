"""AutoML jobs over HTTP: POST /api/v1/automl queues one, GET /api/v1/jobs/{job_id}/leaderboard shows its trials."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from stratus.api.auth import ScopedRoute
from stratus.api.bounds import JobId
from stratus.api.deps import platform
from stratus.api.json_body import json_object
from stratus.api.openapi import json_body
from stratus.automl.params import AutoMLRequest

router = APIRouter(prefix="/api/v1", tags=["automl"], route_class=ScopedRoute)


# The service validates the body (400 with its message: a budget out of range, a metric of the other task).
@router.post("/automl", status_code=201, openapi_extra=json_body(AutoMLRequest))
async def submit_automl(request: Request) -> dict[str, Any]:
    """An AutoML job: {"dataset", "metric", "budget", "name"?, "families"?, "folds"?, "ensemble"?, ...}."""
    body = json_object(await request.body())
    return await run_in_threadpool(platform(request).automl.submit, body)


@router.get("/jobs/{job_id}/leaderboard")
def automl_leaderboard(request: Request, job_id: JobId) -> dict[str, Any]:
    return platform(request).automl.leaderboard(job_id)
