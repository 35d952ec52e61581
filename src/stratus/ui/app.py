"""The console application, mounted by the full server at /ui: its pages, static files and bridge, behind the
guard (guard.py) that checks the session, the CSRF token and adds the security headers."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp

from stratus.errors import StratusError
from stratus.protocol import status_for
from stratus.ui import admin, audit, overview, pages, signin, usage
from stratus.ui.assets import Assets
from stratus.ui.bridge import Bridge
from stratus.ui.guard import ConsoleGuard
from stratus.ui.host import ConsoleHost
from stratus.ui.templating import environment, render

CONSOLE_PATH = "/ui"


def build_console(host: ConsoleHost, api: ASGIApp) -> FastAPI:
    """The console over ``host``'s services; ``api`` is the server's own app, which the bridge calls."""
    console = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, title="Stratus console")
    console.state.platform = host
    console.state.templates = environment()
    console.state.assets = assets = Assets()

    @console.get("/static/{name:path}")
    def static(request: Request, name: str) -> Response:
        return assets.response(request, name)

    for module in (signin, overview, usage, audit, admin):
        console.include_router(module.router)
    for router in pages.ROUTERS:
        console.include_router(router)
    console.mount("/bridge", Bridge(api))
    console.add_exception_handler(StratusError, _error_page)
    console.add_exception_handler(HTTPException, _error_page)
    console.add_exception_handler(RequestValidationError, _error_page)
    console.add_middleware(
        ConsoleGuard, sessions=lambda: host.sessions, access=lambda: host.access, audit=host.audit.record
    )
    return console


async def _error_page(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        status, message = exc.status_code, str(exc.detail)
    elif isinstance(exc, RequestValidationError):
        status, message = 422, "invalid request: " + "; ".join(str(e.get("msg", "")) for e in exc.errors()[:3])
    else:
        status, message = status_for(exc), getattr(exc, "message", str(exc))
    return render(request, "error.html", status_code=status, title=f"Error {status}", status=status, message=message)


def mount_console(app: FastAPI, host: ConsoleHost) -> None:
    """Serve the console at /ui on the server's ``app``."""
    app.mount(CONSOLE_PATH, build_console(host, app))
