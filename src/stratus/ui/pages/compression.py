"""Compression run pages: the list of runs, and a run (the variants' quality, size, latency and throughput
against the parent, as a table and an accuracy-vs-speed scatter plot drawn with uPlot; promote a variant)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from stratus.compress.evaluate import headline
from stratus.jobs import TERMINAL
from stratus.ui.pages import views
from stratus.ui.pages.common import size
from stratus.ui.session import host_of
from stratus.ui.templating import render

router = APIRouter()
PageArg = Annotated[str | None, Query(max_length=6)]
RUNS_PER_PAGE = 50


def rows_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model, the parent first: what the table and the scatter plot show."""
    metric = headline(report.get("kind", "classifier"))
    out = []
    for row in [report["parent"], *report.get("variants", [])]:
        parent = row is report["parent"]
        out.append(
            {
                "name": "parent" if parent else row.get("method", "?"),
                "version": row.get("version"),
                "quality": row["quality"].get(metric),
                "drop": 0.0 if parent else row.get("quality_drop", 0.0),
                "size_bytes": row["size_bytes"],
                "p50_ms": row["p50_ms_batch1"],
                "throughput": row["throughput_batch32"],
                "speedup": 1.0 if parent else row.get("speedup", 1.0),
                "in_budget": True if parent else row.get("within_budget", True),
            }
        )
    return out


def scatter(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """uPlot data for a scatter: x is the p50 latency (sorted, as uPlot wants), one series per model with its
    one point, so the legend names each variant."""
    ordered = sorted(rows, key=lambda r: r["p50_ms"])
    xs = [r["p50_ms"] for r in ordered]
    series = {}
    for r in ordered:
        label = f"{r['name']} (v{r['version']})" if r["version"] else r["name"]
        series[label] = [r["quality"] if other is r else None for other in ordered]
    return {"x": xs, "series": series, "x_label": "p50 latency at batch 1 (ms)", "y_label": metric}


@router.get("/compression")
async def run_list(request: Request, page: PageArg = None) -> Response:
    number = views.page_number(page)
    runs = await run_in_threadpool(
        lambda: host_of(request).jobs.list_jobs(
            None, RUNS_PER_PAGE + 1, offset=(number - 1) * RUNS_PER_PAGE, kind="compress"
        )
    )
    return render(
        request,
        "pages/compression_runs.html",
        title="Compression runs",
        runs=runs[:RUNS_PER_PAGE],
        page=number,
        more=len(runs) > RUNS_PER_PAGE,
    )


@router.get("/compression/{job_id}")
async def run_page(request: Request, job_id: str) -> Response:
    host = host_of(request)

    def load() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        job = host.jobs.get(job_id)
        return job, host.jobs.events(job_id) if job["kind"] == "compress" else []

    job, events = await run_in_threadpool(load)
    if job["kind"] != "compress":
        return RedirectResponse(f"/ui/jobs/{job['id']}", status_code=303)
    spec = job["spec"] or {}
    report = job["metrics"] if job["state"] == "succeeded" and "parent" in (job["metrics"] or {}) else None
    rows = rows_of(report) if report else []
    metric = headline(report.get("kind", "classifier")) if report else "quality"
    steps = [e["data"] for e in events if e["kind"] == "step"]
    live = {
        "job": job["id"],
        "events": f"/ui/bridge/api/v1/jobs/{job['id']}/events",
        "after": events[-1]["seq"] if events else 0,
        "state": job["state"],
        "terminal": list(TERMINAL),
        "reload_when_done": True,
    }
    return render(
        request,
        "pages/compression.html",
        title=f"Compression run {job['id'][:8]}",
        job=job,
        spec=spec,
        report=report,
        rows=rows,
        metric=metric,
        plot=scatter(rows, metric) if rows else None,
        step=steps[-1] if steps else None,
        logs=[e for e in events if e["kind"] in ("log", "error", "state", "done")],
        live=live,
        terminal=TERMINAL,
        size=size,
    )
