"""Prometheus metrics and the OpenAPI schema."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from stratus.api.auth import ScopedRoute
from stratus.api.deps import dataplane
from stratus.api.responses import JSONBody

router = APIRouter(tags=["monitoring"], route_class=ScopedRoute)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(dataplane(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False)
def openapi_schema(request: Request) -> JSONBody:
    """The OpenAPI schema; each operation names its required scope in ``x-required-scope``."""
    return JSONBody(request.app.openapi())
