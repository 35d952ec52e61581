"""Sign-in (an API key, posted in a form) and sign-out (the session is deleted on the server)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from stratus.errors import Forbidden, Unauthenticated
from stratus.ui.guard import cookie_of
from stratus.ui.session import COOKIE, host_of
from stratus.ui.templating import render

router = APIRouter()
MAX_KEY_CHARS = 200


def local_target(value: str | None) -> str:
    """Where to go after signing in: a console path only (never another site: no scheme, no //host, no \\)."""
    if value and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value and ":" not in value:
        return value
    return "/ui/"


def session_cookie(request: Request, session_id: str, seconds: int) -> str:
    """The Set-Cookie value: script cannot read it (HttpOnly), no other site's request carries it
    (SameSite=Strict), only the console's paths get it (Path=/ui), and over TLS only over TLS (Secure)."""
    secure = "; Secure" if request.url.scheme == "https" else ""
    return f"{COOKIE}={session_id}; Max-Age={seconds}; Path=/ui; HttpOnly; SameSite=Strict{secure}"


@router.get("/sign-in")
async def sign_in_page(request: Request, next: str | None = None) -> Response:
    token = cookie_of(request.scope)
    if token and await run_in_threadpool(host_of(request).sessions.resolve, token) is not None:
        return RedirectResponse(local_target(next), status_code=303)
    return render(request, "sign_in.html", title="Sign in", next=local_target(next), error="")


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    host = host_of(request)
    form = await request.form()
    api_key = form.get("api_key")
    target = local_target(str(form.get("next") or ""))
    address = request.client.host if request.client else ""
    try:
        if not isinstance(api_key, str) or not api_key.strip() or len(api_key) > MAX_KEY_CHARS:
            raise Unauthenticated("enter an API key (stk_...)")
        session_id, session = await run_in_threadpool(host.sessions.sign_in, api_key)
    except (Unauthenticated, Forbidden) as exc:
        status = 403 if isinstance(exc, Forbidden) else 401
        await run_in_threadpool(host.audit.record, None, "console sign-in", "/ui/sign-in", address, status, exc.message)
        return render(request, "sign_in.html", status_code=status, title="Sign in", next=target, error=exc.message)
    await run_in_threadpool(host.audit.record, session.caller, "console sign-in", "/ui/sign-in", address, 303, "")
    previous = cookie_of(request.scope)
    if previous:  # a browser holds one session: the one it had before ends now
        await run_in_threadpool(host.sessions.sign_out, previous)
    response = RedirectResponse(target, status_code=303)
    response.headers.append("set-cookie", session_cookie(request, session_id, int(host.sessions.ttl.total_seconds())))
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    token = cookie_of(request.scope)
    if token:
        await run_in_threadpool(host_of(request).sessions.sign_out, token)
    response = RedirectResponse("/ui/sign-in", status_code=303)
    response.headers.append("set-cookie", f"{COOKIE}=; Max-Age=0; Path=/ui; HttpOnly; SameSite=Strict")
    return response


__all__ = ["router"]
