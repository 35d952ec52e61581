"""Every setting and every route is documented (the datasette rule)."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute
from starlette.routing import Route

from conftest import ROOT
from stratus.api import create_app
from stratus.settings import Settings


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"`(STRATUS_[A-Z_]+)`", text))
    declared = {f"STRATUS_{name.upper()}" for name in Settings.model_fields}
    assert declared - documented == set(), "undocumented settings"
    assert documented - declared == set(), "documented settings that do not exist"
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"


def test_every_route_is_documented(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^\| (GET|POST|PUT|PATCH|DELETE) \| `([^`]+)` \|", text, flags=re.M))
    app = create_app(Settings(home=tmp_path, samples=False))
    declared: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, APIRoute | Route) and route.path not in ("/docs/oauth2-redirect", "/redoc"):
            for method in route.methods or ():
                if method != "HEAD":
                    declared.add((method, route.path))
    assert declared - documented == set(), "undocumented routes"
    assert documented - declared == set(), "documented routes that do not exist"
