"""The console tests' shared parts: ONE server and ONE browser for every test under tests/ui.

- ``console_server``: `stratus serve` on a free loopback port with the sample models, for the whole run.
- ``console_keys(scopes, project)``: a fresh API key (its project created if needed), made with the admin key.
- ``browser``: Debian's chromium (`make chromium` installs it) driven by Playwright through its executable path;
  the browser tests skip when it is not installed. Never `playwright install`.
- ``signed_in(scopes, project)``: a Playwright page of a fresh browser context, signed in through the form.
- ``check_page(page, name)``: fails the test on any console error, failed request or answer >= 400 seen by the
  page, any serious or critical axe-core violation, and a page over 300 KB compressed with what it loads; saves a
  full-page screenshot to tests/ui/artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from conftest import ROOT, LiveServer, bearer, scaled, start_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

AXE = ROOT / "ui" / "node_modules" / "axe-core" / "axe.min.js"
#: Screenshots of the pages the tests open (git-ignored); STRATUS_UI_ARTIFACTS moves them.
ARTIFACTS = Path(os.environ.get("STRATUS_UI_ARTIFACTS", ROOT / "tests" / "ui" / "artifacts"))
SERIOUS = ("serious", "critical")
#: The issue's weight budget for a page and everything it loads, compressed.
MAX_PAGE_BYTES = 300 * 1024


@pytest.fixture(scope="session")
def console_server(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("console") / "home", sample_cache)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def console_keys(console_server: LiveServer) -> Callable[..., str]:
    """make(scopes="read", project="default") -> a new key's plaintext."""
    made_projects: set[str] = {"default"}

    def make(scopes: str | list[str] = "read", project: str = "default") -> str:
        if project not in made_projects:
            answer = console_server.post(f"{console_server.url}/api/v1/projects", json={"name": project})
            assert answer.status_code in (201, 409), answer.text
            made_projects.add(project)
        wanted = [scopes] if isinstance(scopes, str) else scopes
        body = {"scopes": wanted, "project": project, "name": "console test"}
        answer = console_server.post(f"{console_server.url}/api/v1/keys", json=body)
        assert answer.status_code == 201, answer.text
        key: str = answer.json()["key"]
        return key

    return make


def sign_in_http(server: LiveServer, key: str) -> tuple[httpx.Client, str]:
    """An httpx client holding a console session for ``key`` (no browser), and the session's CSRF token.
    The caller closes the client (the ``http_session`` fixture does)."""
    client = httpx.Client(base_url=server.url, follow_redirects=False, timeout=scaled(20))
    answer = client.post("/ui/sign-in", data={"api_key": key, "next": "/ui/"})
    assert answer.status_code == 303, answer.text
    page = client.get("/ui/")
    assert page.status_code == 200, page.text
    marker = 'name="csrf-token" content="'
    start = page.text.index(marker) + len(marker)
    return client, page.text[start : page.text.index('"', start)]


@pytest.fixture
def http_session(console_server: LiveServer) -> Iterator[Callable[[str], tuple[httpx.Client, str]]]:
    """sign_in(key) -> (an httpx client with a console session, its CSRF token); closed after the test."""
    clients: list[httpx.Client] = []

    def sign_in(key: str) -> tuple[httpx.Client, str]:
        client, csrf = sign_in_http(console_server, key)
        clients.append(client)
        return client, csrf

    yield sign_in
    for client in clients:
        client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one module. Not for the session: Playwright's sync API keeps an asyncio loop running in the main
    thread while it is started, and every later test in the same worker that runs a loop of its own (asyncio.run)
    would fail."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Debian's chromium is not installed (make chromium installs it): browser tests skipped")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Root (as in CI containers) needs --no-sandbox; the pages come from our own server on loopback.
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@dataclass
class Watched:
    """What a page's browser reported: console errors, failed requests, answers >= 400."""

    problems: list[str] = field(default_factory=list)


def watch(page: Page) -> Watched:
    seen = Watched()
    page.on("console", lambda m: seen.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: seen.problems.append(f"request failed: {r.method} {r.url} {r.failure}"))
    page.on("response", lambda r: seen.problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return seen


@pytest.fixture
def signed_in(
    browser: Browser, console_server: LiveServer, console_keys: Callable[..., str]
) -> Iterator[Callable[..., Page]]:
    """open(scopes="admin", project="default", key=None) -> a page signed in (a context of its own, closed after)."""
    contexts: list[Any] = []

    def open_page(scopes: str | list[str] = "admin", project: str = "default", key: str | None = None) -> Page:
        context = browser.new_context(base_url=console_server.url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(scaled(10) * 1000)
        contexts.append(context)
        page = context.new_page()
        page.watched = watch(page)  # type: ignore[attr-defined]
        page.goto("/ui/sign-in")
        page.fill("#api_key", key or console_keys(scopes, project))
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.url.endswith("/ui/"), page.url
        return page

    yield open_page
    for context in contexts:
        context.close()


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now. The script is evaluated through the
    DevTools protocol (the page's CSP forbids inline script, and must keep forbidding it during the test)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text() + "\n;undefined")
    result = page.evaluate("async () => JSON.stringify((await axe.run(document)).violations)")
    violations: list[dict[str, Any]] = json.loads(result)
    return [v for v in violations if v.get("impact") in SERIOUS]


def page_weight(page: Page) -> tuple[int, float | None]:
    """The bytes of the document and everything it loaded, compressed as sent (Resource Timing's encodedBodySize,
    which counts a resource the browser had cached too, so every page is weighed as on a first visit), and the
    first contentful paint in ms (printed, never asserted: timings belong to benchmarks)."""
    figures = page.evaluate(
        """() => JSON.stringify({
            sizes: performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))
                .map(e => e.encodedBodySize || 0),
            paint: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime ?? null})"""
    )
    found = json.loads(figures)
    return int(sum(found["sizes"])), found["paint"]


def check_page(page: Page, name: str) -> Path:
    """Fail on what the page's browser reported and on axe-core's serious/critical violations; save a screenshot.
    Returns the screenshot's path (printed too, so a failing run shows where it is)."""
    # "load", not "networkidle": that waits half a second of quiet per page, and never comes on a page holding an
    # event stream open (a running job's). A page that fetches after load waits for what it shows first.
    page.wait_for_load_state("load")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    weight, paint = page_weight(page)
    print(f"{name}: {weight / 1024:.1f} KB compressed, first contentful paint {paint} ms")
    assert weight < MAX_PAGE_BYTES, f"{name}: the page and what it loads weigh {weight} bytes compressed"
    problems = list(page.watched.problems)  # type: ignore[attr-defined]
    assert problems == [], f"{name}: the browser reported problems: {problems}"
    violations = axe_violations(page)
    summary = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in violations]
    assert summary == [], f"{name}: axe-core found serious or critical violations: {summary}"
    return shot


__all__ = ["bearer", "check_page", "sign_in_http"]
