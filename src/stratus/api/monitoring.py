"""Prometheus metrics endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from stratus.api.deps import dataplane

router = APIRouter(tags=["monitoring"])


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(dataplane(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
