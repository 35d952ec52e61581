"""Rendering a page: Jinja2 templates from ui/templates/ (autoescaped), with what every page's layout needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from stratus.security.scopes import satisfies
from stratus.ui.assets import Assets
from stratus.ui.nav import NAV
from stratus.ui.session import CSRF_FIELD, console_of

TEMPLATE_DIR = Path(__file__).parent / "templates"


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,  # a misspelt name fails the page (and its test) instead of rendering empty
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """``template`` rendered with ``context`` and the layout's values: the session (``console``), ``csrf``
    (the token), ``csrf_field`` (its form field's name), ``may(scope)``, ``nav`` (the entries this session may
    see), ``asset(name)`` (a static file's URL) and ``path`` (the page's path, for the current nav entry)."""
    env: Environment = request.app.state.templates
    assets: Assets = request.app.state.assets
    session = console_of(request) if "console" in request.scope.get("state", {}) else None
    scopes = session.caller.scopes if session else frozenset()
    values: dict[str, Any] = {
        "console": session,
        "csrf": session.csrf_token if session else "",
        "csrf_field": CSRF_FIELD,
        "may": lambda scope: session is not None and satisfies(scopes, scope),
        "nav": [entry for entry in NAV if session is not None and satisfies(scopes, entry.scope)],
        "asset": assets.url,
        "path": request.url.path,
        **context,
    }
    return HTMLResponse(env.get_template(template).render(values), status_code=status_code)
