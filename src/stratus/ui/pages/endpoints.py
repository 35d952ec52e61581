"""Endpoint pages: the list with the create form, and an endpoint (targets and traffic weights, replicas and
their state, revisions with rollback, latency/throughput/error charts from the metrics history, drift per
feature over time, update, try it)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from stratus.errors import StratusError
from stratus.ui.pages.common import tryit
from stratus.ui.session import console_of, host_of
from stratus.ui.templating import render

router = APIRouter()
#: The charts: the last 30 minutes in 10 s steps (the history's finest resolution), refreshed by pages.js.
CHART_WINDOW_S, CHART_STEP_S = 1800, 10
CHART_METRICS = ("requests_per_s", "errors_per_s", "p50_ms", "p99_ms")
#: Drift points drawn (the newest), and features drawn as lines (the rest are in the table).
DRIFT_POINTS, DRIFT_FEATURES = 200, 8
#: Target rows of the create/update form (an endpoint routes to at most 4 targets).
TARGET_ROWS = 4


def charts(host: Any, project: str, name: str) -> dict[str, Any]:
    now = time.time()
    end = now - now % CHART_STEP_S + CHART_STEP_S
    series = host.history.many(
        project, "endpoint", name, list(CHART_METRICS), end - CHART_WINDOW_S, end, float(CHART_STEP_S)
    )
    xs = [t for t, _ in series[CHART_METRICS[0]]]
    values = {m: [v for _, v in points] for m, points in series.items()}
    return {
        # Series as [label, values] pairs: the page's JSON block sorts an object's keys, and the order is the colour.
        "traffic": {
            "x": xs,
            "series": [["requests/s", values["requests_per_s"]], ["errors/s", values["errors_per_s"]]],
            "y_label": "per second",
        },
        "latency": {"x": xs, "series": [["p50 ms", values["p50_ms"]], ["p99 ms", values["p99_ms"]]], "y_label": "ms"},
        "requests": round(sum((v or 0.0) * CHART_STEP_S for v in values["requests_per_s"])),
        "refresh": {
            "url": f"/ui/bridge/api/v1/metrics/series?scope=endpoint&name={name}&metric={','.join(CHART_METRICS)}"
            f"&since={CHART_WINDOW_S // 60}m&step={CHART_STEP_S}",
            "seconds": CHART_STEP_S,
        },
    }


def drift(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Drift per feature over time: each feature's PSI (comparable across features and tests, unlike the tests'
    scores, which are p-values for some and distances for others), drifted features first; and the newest report."""
    if not points:
        return None
    latest = points[-1]
    features = latest["features"]
    order = sorted(features, key=lambda f: (not features[f][2], -float(features[f][3] or 0.0), f))
    shown = order[:DRIFT_FEATURES]
    xs = []
    series: dict[str, list[float | None]] = {f: [] for f in shown}
    for point in points:
        xs.append(_unix(point["at"]))
        for feature in shown:
            found = point["features"].get(feature)
            series[feature].append(float(found[3]) if found and found[3] is not None else None)
    columns = ("feature", "test", "score", "drifted", "psi")
    table = [dict(zip(columns, (f, *features[f][:4]), strict=True)) for f in order]
    return {"chart": {"x": xs, "series": series, "y_label": "PSI"}, "latest": latest, "table": table}


def _unix(iso: str) -> float:
    from datetime import UTC, datetime

    return datetime.fromisoformat(iso.removesuffix("Z")).replace(tzinfo=UTC).timestamp()


@router.get("/endpoints")
async def endpoint_list(request: Request) -> Response:
    host = host_of(request)
    endpoints = await run_in_threadpool(host.endpoints.list_all)
    return render(
        request,
        "pages/endpoints.html",
        title="Endpoints",
        endpoints=endpoints,
        rows=range(TARGET_ROWS),
        targets=[],
        scaling={"min_replicas": 1, "max_replicas": 1},
    )


def _endpoint_data(request: Request, name: str) -> dict[str, Any]:
    host = host_of(request)
    endpoint = host.endpoints.get(name)
    revisions = host.endpoints.revisions(name)
    events = host.endpoints.events(name, limit=20)
    spec = endpoint["spec"] or {}
    targets = spec.get("targets") or []
    panel = None
    if targets:
        try:
            first = host.registry.get_version(targets[0]["model"], int(targets[0]["version"]))
            panel = tryit(host, first, f"endpoint {name}", f"/v2/models/{name}/infer")
        except StratusError:  # the version went away since: the page shows the endpoint without the panel
            panel = None
    project = console_of(request).caller.project
    return {
        "endpoint": endpoint,
        "spec": spec,
        "targets": targets,
        "scaling": spec.get("scaling") or {},
        "live": endpoint.get("live") or {},
        "revisions": list(reversed(revisions)),
        "events": list(reversed(events)),
        "charts": charts(host, project, name),
        "drift": drift(host.drift.series(endpoint=name, limit=DRIFT_POINTS)),
        "tryit": panel,
        "rows": range(TARGET_ROWS),
    }


@router.get("/endpoints/{name}")
async def endpoint_page(request: Request, name: str) -> Response:
    data = await run_in_threadpool(_endpoint_data, request, name)
    return render(request, "pages/endpoint.html", title=f"Endpoint {name}", **data)
