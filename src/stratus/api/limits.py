"""Request body size limits, enforced while the body streams in, before any handler reads it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratus.errors import InvalidInput, PayloadTooLarge

log = logging.getLogger(__name__)


class ClientDisconnected(InvalidInput):
    """The client closed its connection before it sent the whole body. A client's doing, not a crash: one
    line at INFO, and the handler stops at its read (the answer goes nowhere)."""

    kind = "client_disconnected"


class BodySizeLimit:
    """413 for a body over the limit, judged by Content-Length when given and by counting otherwise.

    ``limit_for`` picks the limit by path, so model uploads can be larger than inference requests.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await _reject(send, limit)
                    return
                break
        received = 0
        complete = False

        async def counting_receive() -> Message:
            nonlocal received, complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    # Raised inside the handler's read, so the app's error mapping answers 413.
                    raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
            elif message["type"] == "http.disconnect" and not complete:
                client = scope.get("client") or ("?", 0)
                log.info(
                    "client %s:%s disconnected after %d bytes of its body: %s %s",
                    client[0],
                    client[1],
                    received,
                    scope["method"],
                    scope["path"],
                )
                raise ClientDisconnected("the client disconnected before it sent the whole body")
            return message

        await self.app(scope, counting_receive, send)


async def _reject(send: Send, limit: int) -> None:
    body = orjson.dumps({"error": f"request body is larger than the limit of {limit} bytes"})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
