"""Usage and cost per project, key or model over time (metering): the table of a period and a daily chart.

A key sees its own project's usage; an admin sees every project's, or one project's. The sums are the
metering service's own report (``UsageMeter.query``), the same as ``GET /api/v1/usage``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from stratus.metering.usage import UsageReport
from stratus.security.keys import check_project_name
from stratus.security.scopes import satisfies
from stratus.tenancy import Caller
from stratus.ui.session import console_of, host_of
from stratus.ui.templating import render

router = APIRouter()
PERIODS = {"1": "last 24 hours", "7": "last 7 days", "30": "last 30 days", "90": "last 90 days"}
DIMENSIONS = {"model": "model", "key": "API key", "project": "project", "endpoint": "endpoint", "kind": "kind"}
#: The chart draws the busiest groups, each its own line; the rest is summed as "other".
LINES = 5


def usage_data(caller: Caller, meter: Any, days: int, by: str, project: str | None) -> dict[str, Any]:
    admin = satisfies(caller.scopes, "admin")
    scope = project if admin else caller.project
    end = datetime.now(UTC).replace(tzinfo=None)
    start = end - timedelta(days=days)
    table: UsageReport = meter.query(start=start, end=None, group_by=[by], project=scope)
    daily: UsageReport = meter.query(start=start, end=None, group_by=[by, "day"], project=scope)
    ranked = sorted(table.rows, key=lambda row: -row[1].requests)
    shown = [group[by] for group, _ in ranked[:LINES]]
    first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    dates = [first + timedelta(days=i) for i in range(days + 1)]
    index = {d.strftime("%Y-%m-%d"): i for i, d in enumerate(dates)}
    series: dict[str, list[float]] = {name or "(none)": [0.0] * len(dates) for name in shown}
    for group, counts in daily.rows:
        i = index.get(group["day"])
        if i is None:
            continue
        name = group[by] if group[by] in shown else "other"
        series.setdefault(name or "(none)", [0.0] * len(dates))[i] += counts.requests
    return {
        "report": table.to_dict(),
        "rows": [(group[by], counts.to_dict(table.prices)) for group, counts in ranked],
        "chart": {
            "x": [d.replace(tzinfo=UTC).timestamp() for d in dates],
            "series": series or {"requests": [0.0] * len(dates)},
            "y_label": "requests per day",
        },
        "admin": admin,
        "scope": scope,
    }


@router.get("/usage")
async def usage(
    request: Request,
    days: Literal["1", "7", "30", "90"] = "30",
    by: Literal["model", "key", "project", "endpoint", "kind"] = "model",
    project: Annotated[str, Query(max_length=63)] = "",
) -> Response:
    if project:
        check_project_name(project)
    session = console_of(request)
    host = host_of(request)
    data = await run_in_threadpool(usage_data, session.caller, host.usage, int(days), by, project or None)
    return render(
        request,
        "usage.html",
        title="Usage and cost",
        days=days,
        by=by,
        project=project or "",
        periods=PERIODS,
        dimensions={k: v for k, v in DIMENSIONS.items() if k != "project" or data["admin"]},
        **data,
    )
