"""Error responses as the core's error kinds, through stratus.protocol's one table: the SDK raises the
kind the server raised (NotFound, RateLimited, ...) with the server's message."""

from __future__ import annotations

import httpx

from stratus import errors


def error_for_response(response: httpx.Response) -> errors.StratusError:
    """The error kind a server's error response means, with its message and, for 429, its Retry-After."""
    try:
        body = response.json()
        message = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(message, dict):
            message = message.get("message", str(message))
    except ValueError:
        message = response.text or response.reason_phrase
    retry_after = response.headers.get("retry-after")
    # Here, not at the top: stratus.protocol loads numpy, which `stratus models list` need not pay for.
    from stratus import protocol

    return protocol.error_for_status(
        response.status_code,
        f"{message} (HTTP {response.status_code})",
        response.headers.get(protocol.KIND_HEADER),
        retry_after_s=float(retry_after) if retry_after and retry_after.isascii() and retry_after.isdigit() else None,
    )
