"""Host header check against DNS rebinding (the hole behind MLflow CVE-2025-14279).

A web page on another origin can point its own DNS name at 127.0.0.1 and make a browser send requests
to a server on loopback; the Host header then names the attacker's domain. A server bound to loopback
therefore answers only to the loopback names with its own port, plus what --allowed-hosts adds.
"""

from __future__ import annotations

import ipaddress

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_host_values(bind_host: str, port: int, extra: list[str]) -> frozenset[str] | None:
    """The accepted Host values, or None when any is accepted (a non-loopback bind with no list)."""
    if not is_loopback(bind_host) and not extra:
        return None
    names = ("localhost", "127.0.0.1", "[::1]") if is_loopback(bind_host) else ()
    values = {f"{name}:{port}" for name in names}
    if port == 80:
        values.update(names)
    values.update(h.lower() for h in extra)
    return frozenset(values)


#: Headers that say where a request goes or how its body is framed: sent twice, two parts of the chain in front
#: of a server (a proxy, a cache, this server) may each believe another copy (request smuggling, a Host check
#: passed by one value and routed by the other). A request that repeats any of them is refused.
FRAMING_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding", b"content-type", b"content-encoding"})


class HostCheck:
    """Refuses a request that repeats a framing header (always) or names a Host not allowed (when ``allowed``)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str] | None) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = b""
        seen: set[bytes] = set()
        for key, value in scope["headers"]:
            if key in FRAMING_HEADERS:
                if key in seen:
                    await refuse(send, 400, f"the request has more than one {key.decode()} header")
                    return
                seen.add(key)
                if key == b"host":
                    host = value
        if self.allowed is None:
            await self.app(scope, receive, send)
            return
        name = host.decode("latin-1").lower()
        if name in self.allowed:
            await self.app(scope, receive, send)
            return
        await refuse(
            send,
            400,
            f"Host header {name!r} is not allowed: this server answers only to "
            f"{', '.join(sorted(self.allowed))} (add names with --allowed-hosts)",
        )


async def refuse(send: Send, status: int, message: str) -> None:
    """Answer ``status`` with a JSON error, from a middleware, before the app has seen the request."""
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
