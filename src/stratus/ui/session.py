"""The signed-in session as a page handler sees it, and the scope check for console actions.

The guard (guard.py) resolves the session from its cookie before any handler runs and leaves it in the
request's state; handlers call ``console_of(request)`` for it and ``require(request, scope)`` before an
action, which is the API's own check (``AccessControl.authorize``: scope, rate limit), so a forbidden
action answers 403 here exactly as it does over the API.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.requests import Request

from stratus.security.sessions import ConsoleSession
from stratus.ui.host import ConsoleHost

#: The session cookie: HttpOnly, SameSite=Strict, Path=/ui, Secure when the request came over TLS.
COOKIE = "stratus_console"
#: Where a state-changing request carries its CSRF token: this header (fetch) or this form field (HTML forms).
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
_STATE = "console"


def host_of(request: Request) -> ConsoleHost:
    result: ConsoleHost = request.app.state.platform
    return result


def console_of(request: Request) -> ConsoleSession:
    """The request's session. Every console route but sign-in and the static assets has one (the guard
    redirects the others to sign-in), so a handler never sees a request without it."""
    session: ConsoleSession = request.scope["state"][_STATE]
    return session


def attach(scope: MutableMapping[str, Any], session: ConsoleSession) -> None:
    state = scope.setdefault("state", {})
    assert isinstance(state, dict)
    state[_STATE] = session


def require(request: Request, scope: str) -> ConsoleSession:
    """The session, if its key may do what needs ``scope`` now; else Forbidden (403) or RateLimited (429)."""
    session = console_of(request)
    host_of(request).access.authorize(session.caller, session.key_rps, scope)
    return session
