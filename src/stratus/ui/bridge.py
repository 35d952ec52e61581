"""The console's bridge to the API: /ui/bridge/<API path> is that API route, called in-process as the session.

The console's scripts (charts, live job events, the try-it panel, uploads) use the same routes as the CLI and
SDK without ever holding the key: the guard has already checked the session (and, for a change, its CSRF
token), and the bridge hands the session's caller to the API's access check (``stratus.api.auth.CONSOLE_CALLER``).
So every route keeps its own scope, rate limit, quota, body limit, error mapping and audit record.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from stratus.api.auth import CONSOLE_CALLER
from stratus.ui.guard import plain, route_path
from stratus.ui.session import CSRF_HEADER

#: The API routes the console may reach; anything else under /ui/bridge is 404.
PREFIXES = ("/api/v1/", "/v2/", "/v1/", "/openai/v1/")
#: Headers the API never sees from the console: the browser's credentials and what the outer layers handled.
_DROPPED = {b"cookie", b"authorization", CSRF_HEADER.encode(), b"accept-encoding"}


class Bridge:
    def __init__(self, api: ASGIApp) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        session = scope.get("state", {}).get("console")
        if session is None:  # the guard stops these first; never forward without a session
            await plain(send, 401, "no console session")
            return
        if not path.startswith(PREFIXES):
            await plain(send, 404, "the console bridge reaches /api/v1/, /v2/, /v1/ and /openai/v1/ only")
            return
        inner = {
            **scope,
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "headers": [(k, v) for k, v in scope["headers"] if k not in _DROPPED],
            CONSOLE_CALLER: (session.caller, session.key_rps),
        }
        await self.api(inner, receive, send)
