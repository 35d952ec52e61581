"""The console's ASGI middleware: security headers on every answer, the session, CSRF and origin checks.

For every request under /ui it

- adds the Content-Security-Policy (no inline script, nothing from another origin, no framing) and the other
  security headers to every response, redirects and errors included;
- resolves the session from its cookie; without one, a page answers 303 to sign-in (the bridge, called by
  scripts, 401), and only the sign-in page and the static assets are served;
- refuses (403) a state-changing request (anything but GET/HEAD) that comes from another origin (Origin,
  Sec-Fetch-Site) or lacks the session's CSRF token, in the ``X-CSRF-Token`` header or, for an HTML form
  (application/x-www-form-urlencoded), its ``csrf_token`` field;
- checks the session's key may read now (``AccessControl.authorize``: the read scope and the rate limits, as
  every API read), and sets the caller (stratus.tenancy) so every service the page calls is scoped to the
  session's project, and audits the console's own state-changing requests (the API's routes audit the
  bridge's).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratus import tenancy
from stratus.errors import StratusError
from stratus.protocol import status_for
from stratus.security.access import AccessControl
from stratus.security.sessions import CONSOLE_SCOPE, ConsoleSession, ConsoleSessions
from stratus.ui.session import COOKIE, CSRF_FIELD, CSRF_HEADER, attach

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_HEADERS = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
)
SAFE_METHODS = frozenset({"GET", "HEAD"})
#: Served without a session (paths below the mount point).
SIGN_IN = "/sign-in"
STATIC = "/static/"
BRIDGE = "/bridge/"
#: Most bytes of a form body read here to find its CSRF field; console forms are a few hundred bytes.
MAX_FORM_BYTES = 64 * 1024


def route_path(scope: Scope) -> str:
    """The path below the console's mount point (``/`` for /ui/)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def cookie_of(scope: Scope, name: str = COOKIE) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name and v:
                    return str(v)
    return None


def header_of(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def cross_site(scope: Scope) -> bool:
    """Whether a request says it comes from another site: its Origin is not this server's, or the browser's
    Sec-Fetch-Site says so. Browsers send both on every POST; a missing header proves nothing either way."""
    site = header_of(scope, b"sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = header_of(scope, b"origin")
    if origin is None:
        return False
    host = header_of(scope, b"host") or ""
    scheme = "https" if scope.get("scheme") == "https" else "http"
    return origin != f"{scheme}://{host}"


async def plain(send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def redirect(send: Send, location: str, *, clear_cookie: bool = False) -> None:
    headers = [(b"location", location.encode())]
    if clear_cookie:
        headers.append((b"set-cookie", f"{COOKIE}=; Max-Age=0; Path=/ui; HttpOnly; SameSite=Strict".encode()))
    await plain(send, 303, "sign in first", headers)


class ConsoleGuard:
    def __init__(
        self,
        app: ASGIApp,
        sessions: Callable[[], ConsoleSessions],
        access: Callable[[], AccessControl],
        audit: Callable[[Any, str, str, str, int, str], None],
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.access = access
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send)
        path = route_path(scope)
        method = scope["method"]
        safe = method in SAFE_METHODS
        if not safe and cross_site(scope):
            await plain(send, 403, "refused: a state-changing request from another site")
            return
        if path.startswith(STATIC) or path == SIGN_IN:
            await self.app(scope, receive, send)
            return
        token = cookie_of(scope)
        session = await run_in_threadpool(self.sessions().resolve, token) if token else None
        if session is None:
            if path.startswith(BRIDGE):
                await plain(send, 401, "no console session: sign in at /ui/sign-in")
            else:
                target = scope.get("root_path", "") + path if safe else "/ui/"
                await redirect(send, f"/ui/sign-in?next={quote(target, safe='/')}", clear_cookie=token is not None)
            return
        if not safe:
            checked = await _csrf_checked(scope, receive, session)
            if checked is None:
                await plain(send, 403, "refused: missing or wrong CSRF token")
                return
            receive = checked
        attach(scope, session)
        tenancy.enter(session.caller, {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        if not path.startswith(BRIDGE):  # the bridge's API routes check their own scope
            try:
                # What every API read gets: the read scope, the key's and project's rate limits.
                self.access().authorize(session.caller, session.key_rps, CONSOLE_SCOPE)
            except StratusError as exc:
                retry = getattr(exc, "retry_after_s", None)
                extra = [(b"retry-after", str(max(1, round(retry))).encode())] if retry is not None else []
                await plain(send, status_for(exc), exc.message, extra)
                return
        if safe or path.startswith(BRIDGE):
            await self.app(scope, receive, send)
            return
        status = 500
        outer = send

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await outer(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            client = scope.get("client")
            address = client[0] if client else ""
            full = scope.get("root_path", "") + path
            await run_in_threadpool(self.audit, session.caller, f"console {method} {full}", full, address, status, "")


async def _csrf_checked(scope: Scope, receive: Receive, session: ConsoleSession) -> Receive | None:
    """``receive`` to hand on when the request carries the session's CSRF token, else None.

    The header is checked first; an HTML form's body is read (bounded) to find its field, then replayed."""
    expected = session.csrf_token.encode()
    sent = header_of(scope, CSRF_HEADER.encode())
    if sent is not None:
        return receive if hmac.compare_digest(sent.encode(), expected) else None
    media = (header_of(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_FORM_BYTES:
            return None
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    values = parse_qs(body.decode("latin-1"), keep_blank_values=True).get(CSRF_FIELD, [])
    if len(values) != 1 or not hmac.compare_digest(values[0].encode(), expected):
        return None
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _with_security_headers(send: Send) -> Send:
    async def secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(raw=list(message.get("headers", [])))
            for name, value in _HEADERS:
                headers[name] = value
            if "cache-control" not in headers:
                # Pages carry the session's CSRF token and the tenant's data: never stored by a cache.
                headers["cache-control"] = "no-store"
            message = {**message, "headers": headers.raw}
        await send(message)

    return secured
