"""The inference routes, served without the web framework's per-request work.

Profiled in process on iris (V2 JSON, 32 concurrent requests), matching a request against every route and
solving FastAPI's dependencies took about a third of an inference request's time in the app. The lane
takes the routes that infer (scope ``predict``) from the app's inference routers, matches only those, and
calls the same endpoint functions behind the same access check (``auth.guarded``); an error becomes the
response the app's exception handlers give (``errors.response_for``). Every other request, and any
inference route whose endpoint needs more than the request and its path parameters, goes on to the router.

The lane sits inside the host check and the body size limit, so both still apply.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from starlette.convertors import StringConvertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from stratus.api.auth import INFERENCE_SCOPE, Handler, ScopedRoute, guarded
from stratus.api.errors import response_for


@dataclass(frozen=True)
class Lane:
    method: str
    path: re.Pattern[str]
    handler: Handler


def lanes_for(routes: Sequence[BaseRoute]) -> list[Lane]:
    """A lane for each inference route whose endpoint takes only the request and string path parameters."""
    lanes = []
    for route in routes:
        if not isinstance(route, ScopedRoute) or route.required_scope != INFERENCE_SCOPE:
            continue
        params = list(inspect.signature(route.endpoint).parameters)
        convertors = route.param_convertors
        if params != ["request", *convertors] or not all(isinstance(c, StringConvertor) for c in convertors.values()):
            continue
        for method in route.methods or ():
            lanes.append(
                Lane(method, route.path_regex, guarded(_call(route.endpoint), route.required_scope, route.audit_action))
            )
    return lanes


def _call(endpoint: Callable[..., Any]) -> Handler:
    async def call(request: Request) -> Response:
        response: Response = await endpoint(request, **request.path_params)
        return response

    return call


class FastLane:
    """ASGI middleware that answers inference requests itself and passes everything else to ``app``.

    ``routers`` are the app's inference routers, included in it without a prefix."""

    def __init__(self, app: ASGIApp, routers: Sequence[APIRouter]) -> None:
        self.app = app
        self.lanes = lanes_for([route for router in routers for route in router.routes])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method, path = scope["method"], scope["path"]
            for lane in self.lanes:
                match = lane.path.match(path) if lane.method == method else None
                if match is not None:
                    scope["path_params"] = match.groupdict()
                    request = Request(scope, receive)
                    try:
                        response = await lane.handler(request)
                    except Exception as exc:
                        response = await response_for(request, exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


__all__ = ["FastLane", "Lane", "lanes_for"]
