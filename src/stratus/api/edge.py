"""What every request passes at the edge, whatever its route: strict JSON bodies on the control plane, a
500 that keeps the connection usable, and a 405 whose ``Allow`` names every method of the path.

Starlette's ServerErrorMiddleware answers an unexpected exception with a 500 and then re-raises it, and
uvicorn closes a connection whose application raised, so a client's next request on the same keep-alive
connection fails too. ``CatchAll`` sits inside it and ends the exchange normally instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratus.api.bounds import JSON_SAFE_MAX
from stratus.api.errors import error_response, response_for
from stratus.api.responses import JSONBody

#: Paths whose JSON bodies the gate checks: the control plane. Inference bodies go through the protocol codecs.
CONTROL_PREFIXES = ("/api/", "/v2/repository/")
_JSON_SUBTYPES = (b"application/json",)


class CatchAll:
    """A 500 JSON answer with a request id for any exception no handler mapped; the connection stays open."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                # Half a response is out: only closing the connection tells the client it is incomplete
                # (uvicorn closes it and logs the traceback).
                raise
            # The same answer as the app's handler for unexpected errors: a 500 with a request id, logged.
            response = await response_for(Request(scope), exc)
            await response(scope, receive, send)


class StrictJSONBodies:
    """Refuses, when the handler reads it, a control-plane JSON body that is not plain JSON with JSON-safe
    integers (within +-(2**53 - 1), which every JSON client holds exactly; the schema's JsonValue says so).

    Python's json module, which FastAPI uses, accepts NaN and Infinity literals, integers of any size and
    lone surrogates; stored, such values later fail to render or overflow SQLite. Checking the body here
    covers every route's body at once, including free-form objects such as a version's config. The check
    runs on the handler's read, so authentication still comes first.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(CONTROL_PREFIXES) or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        checked = False

        async def checked_receive() -> Message:
            nonlocal checked
            if checked:
                return await receive()
            chunks: list[bytes] = []
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return message
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            checked = True
            body = b"".join(chunks)
            check_json(body)
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, checked_receive, send)


def _is_json(scope: Scope) -> bool:
    """FastAPI reads a body without a content type as JSON, so the gate does too."""
    for key, value in scope["headers"]:
        if key == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media in _JSON_SUBTYPES or (media.startswith(b"application/") and media.endswith(b"+json"))
    return True


class _OutOfRange(ValueError):
    pass


def _bounded_int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > 16 or not -JSON_SAFE_MAX <= int(text) <= JSON_SAFE_MAX:
        shown = f"{text[:30]}..." if len(text) > 30 else text
        raise _OutOfRange(f"request body: the integer {shown} is outside +-(2**53 - 1), the JSON-safe range")
    return int(text)


def check_json(body: bytes) -> None:
    """Raises a 400 HTTPException when ``body`` (if not blank) is not strict JSON with JSON-safe integers."""
    if not body.strip():
        return
    try:
        # orjson refuses NaN/Infinity, numbers that overflow to infinity, invalid UTF-8, lone surrogates and
        # nesting past 1024 levels; the second pass judges integer literals, which orjson turns into floats.
        orjson.loads(body)
        json.loads(body, parse_int=_bounded_int)
    except _OutOfRange as exc:
        raise HTTPException(400, str(exc)) from None
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if not isinstance(exc, RecursionError) else "nested too deeply"
        raise HTTPException(400, f"request body is not valid JSON: {reason}") from None


def _flat(routes: Iterable[Any]) -> Iterator[Any]:
    """The routes themselves: FastAPI keeps an included router as one entry holding the router's routes
    (whose paths carry the router's prefix; ours are included without a further one)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat(inner.routes)
        else:
            yield route


def _literal_length(template: str) -> int:
    return len(re.sub(r"{[^}]*}", "", template))


async def method_not_allowed(request: Request, exc: Exception) -> JSONBody:
    """405 with ``Allow`` listing the methods of every route of this path (Starlette names only the first
    route's, and GET and POST of one path are two routes)."""
    # Where templates overlap (/datasets/builtin and /datasets/{name}; /models/{name}:predict and
    # /models/{name}), the most literal template is the resource the client meant, as the schema lists it.
    matching = [
        route
        for route in _flat(request.app.router.routes)
        if getattr(route, "methods", None) and route.path_regex.match(request.scope["path"])
    ]
    best = max((_literal_length(route.path) for route in matching), default=0)
    allowed = {m for route in matching if _literal_length(route.path) == best for m in route.methods}
    allow = ", ".join(sorted(allowed))
    response = error_response(
        request, 405, f"method {request.method} is not allowed here; allowed: {allow}", "method_not_allowed"
    )
    response.headers["Allow"] = allow
    return response
