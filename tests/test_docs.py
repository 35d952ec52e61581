"""Every setting and every route is documented (the datasette rule)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT
from stratus.api import create_app
from stratus.settings import Settings


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"`(STRATUS_[A-Z0-9_]+)`", text))
    declared = {f"STRATUS_{name.upper()}" for name in Settings.model_fields}
    assert declared - documented == set(), "undocumented settings"
    assert documented - declared == set(), "documented settings that do not exist"
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"


def test_every_route_is_documented(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^\| (GET|POST|PUT|PATCH|DELETE) \| `([^`]+)` \|", text, flags=re.M))
    app = create_app(Settings(home=tmp_path, samples=False, allowed_hosts=["testserver"]))
    declared = {(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item}
    declared |= {("GET", "/openapi.json")}
    assert declared - documented == set(), "undocumented routes"
    assert documented - declared == set(), "documented routes that do not exist"


def test_every_console_route_is_documented() -> None:
    """The console's routes (stratus.ui: its own and the resource pages) are listed in docs/console.md."""
    from stratus.ui import app as console
    from stratus.ui import pages

    text = (ROOT / "docs" / "console.md").read_text()
    documented = set(re.findall(r"^\| (GET|POST|PUT|PATCH|DELETE) \| `(/ui/[^`]*)` \|", text, flags=re.M))
    routers = [m.router for m in (console.signin, console.overview, console.usage, console.audit, console.admin)]
    declared = {
        (method, "/ui" + route.path)
        for router in [*routers, *pages.ROUTERS]
        for route in router.routes
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }
    declared.add(("GET", "/ui/static/{name}"))
    assert declared - documented == set(), "undocumented console routes"
    assert documented - declared == set(), "documented console routes that do not exist"
