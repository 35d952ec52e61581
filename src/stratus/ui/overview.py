"""The overview: the project's models, endpoints, running jobs, the last hour's traffic and the alerts firing."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from stratus.ui.session import console_of, host_of
from stratus.ui.templating import render

router = APIRouter()
#: The traffic chart: the last hour in one-minute steps.
WINDOW_S, STEP_S = 3600, 60
SHOWN = 10


def overview_data(request: Request) -> dict[str, Any]:
    host = host_of(request)
    project = console_of(request).caller.project
    models, model_count = host.registry.page_models(0, SHOWN)
    endpoints = host.endpoints.list_all()
    running = host.jobs.list_jobs(state="running", limit=SHOWN)
    queued = host.jobs.list_jobs(state="queued", limit=SHOWN)
    now = time.time()
    end = now - now % STEP_S + STEP_S
    traffic = host.history.project_traffic(project, end - WINDOW_S, end, STEP_S)
    requests = sum(r for _, r, _ in traffic)
    errors = sum(e for _, _, e in traffic)
    alerts = [a for a in host.alerts.list_all() if a["state"] in ("firing", "pending")]
    return {
        "models": models,
        "model_count": model_count,
        "endpoints": endpoints[:SHOWN],
        "endpoint_count": len(endpoints),
        "jobs": running + queued,
        "requests": requests,
        "errors": errors,
        "rps": requests / WINDOW_S,
        "chart": {
            "x": [t for t, _, _ in traffic],
            "series": {
                "requests/s": [r / STEP_S for _, r, _ in traffic],
                "errors/s": [e / STEP_S for _, _, e in traffic],
            },
        },
        "alerts": alerts,
    }


@router.get("/")
async def overview(request: Request) -> Response:
    data = await run_in_threadpool(overview_data, request)
    return render(request, "overview.html", title="Overview", **data)
