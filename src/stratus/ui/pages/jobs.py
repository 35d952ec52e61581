"""Job pages: the paged list with the start-training form, and a training job (parameters, progress bar, loss
and accuracy curves, logs, cancel). The page is drawn from the job's stored events; static/pages.js then follows
the job's server-sent events (GET /api/v1/jobs/{id}/events through the bridge) and moves the bar and the curves
while it runs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from stratus.jobs import TERMINAL
from stratus.training.params import SKLEARN_MODELS, TORCH_MODELS
from stratus.ui.pages import views
from stratus.ui.session import host_of
from stratus.ui.templating import render

router = APIRouter()
Kind = Annotated[str | None, Query(pattern="^(train|compress)$")]
State = Annotated[str | None, Query(pattern="^(queued|running|succeeded|failed|cancelled)$")]
PageArg = Annotated[str | None, Query(max_length=6)]
#: Jobs a list page shows; the count is not computed (10,000 jobs): "next" is offered while a page is full.
JOBS_PER_PAGE = 50


def curves(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch events as chart data: x = epoch, the training loss and the validation metric."""
    xs: list[int] = []
    loss: list[float | None] = []
    metric: list[float | None] = []
    name = "validation"
    for event in events:
        if event["kind"] != "epoch":
            continue
        data = event["data"]
        xs.append(int(data.get("epoch", len(xs) + 1)))
        loss.append(data.get("loss"))
        metric.append(data.get("val_metric"))
        name = str(data.get("val_metric_name") or name)
    return {"x": xs, "series": {"loss": loss, f"validation {name}": metric}, "metric": f"validation {name}"}


def progress_of(job: dict[str, Any]) -> tuple[int, int]:
    """(epochs done, epochs) from the job's last progress event; a finished job is complete."""
    progress = job.get("progress") or {}
    done, total = int(progress.get("epoch") or 0), int(progress.get("epochs") or 0)
    if job["state"] == "succeeded":
        total = total or 1
        done = total
    return done, total


@router.get("/jobs")
async def job_list(request: Request, page: PageArg = None, kind: Kind = None, state: State = None) -> Response:
    host = host_of(request)
    number = views.page_number(page)

    def load() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        jobs = host.jobs.list_jobs(state, JOBS_PER_PAGE + 1, offset=(number - 1) * JOBS_PER_PAGE, kind=kind)
        return jobs, host.datasets.list_datasets()

    jobs, datasets = await run_in_threadpool(load)
    more = len(jobs) > JOBS_PER_PAGE
    extra = "".join(f"&amp;{k}={v}" for k, v in (("kind", kind), ("state", state)) if v)
    return render(
        request,
        "pages/jobs.html",
        title="Jobs",
        jobs=jobs[:JOBS_PER_PAGE],
        page=number,
        more=more,
        kind=kind,
        state=state,
        extra=extra,
        datasets=datasets,
        trainers=[*SKLEARN_MODELS, *TORCH_MODELS],
    )


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str) -> Response:
    host = host_of(request)

    def load() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        job = host.jobs.get(job_id)
        return job, host.jobs.events(job_id) if job["kind"] == "train" else []

    job, events = await run_in_threadpool(load)
    if job["kind"] == "compress":
        return RedirectResponse(f"/ui/compression/{job['id']}", status_code=303)
    done, total = progress_of(job)
    request_spec = (job["spec"] or {}).get("request") or {}
    live = {
        "job": job["id"],
        "events": f"/ui/bridge/api/v1/jobs/{job['id']}/events",
        "after": events[-1]["seq"] if events else 0,
        "state": job["state"],
        "terminal": list(TERMINAL),
        "curves": curves(events),
        "done": done,
        "total": total,
    }
    return render(
        request,
        "pages/job.html",
        title=f"Training job {job['id'][:8]}",
        job=job,
        request_spec=request_spec,
        params=request_spec.get("params") or {},
        logs=[e for e in events if e["kind"] in ("log", "error", "state", "done")],
        done=done,
        total=total,
        live=live,
        terminal=TERMINAL,
    )
