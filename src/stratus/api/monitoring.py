"""Prometheus metrics and the OpenAPI schema."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from stratus.api.auth import ADMIN, ScopedRoute, caller_of
from stratus.api.deps import dataplane
from stratus.api.responses import JSONBody
from stratus.security.scopes import satisfies

router = APIRouter(tags=["monitoring"], route_class=ScopedRoute)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Every series for an admin; for any other key only its own project's series (each series that names a
    model or an endpoint carries a ``project`` label), so one tenant never sees another's names or traffic."""
    caller = caller_of(request)
    project = None if satisfies(caller.scopes, ADMIN) else caller.project
    return Response(dataplane(request).metrics.render(project), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False)
def openapi_schema(request: Request) -> JSONBody:
    """The OpenAPI schema; each operation names its required scope in ``x-required-scope``."""
    return JSONBody(request.app.openapi())
