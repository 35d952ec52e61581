"""Request body size limits, enforced while the body streams in, before any handler reads it."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratus.errors import PayloadTooLarge


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

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the handler's read, so the app's error mapping answers 413.
                    raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
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
