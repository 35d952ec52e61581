"""The console's security, over HTTP against the real server (no browser needed): sessions, CSRF, CSP, the cookie,
scopes and tenants. One server for the whole folder (conftest.py); each test signs in with its own keys."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from starlette.requests import Request

from conftest import LiveServer, bearer, scaled
from onnx_factory import affine_model
from stratus.security.sessions import ConsoleSessionRow, session_hash
from stratus.settings import Settings
from stratus.store import Database
from stratus.ui import app as console_app
from stratus.ui import pages
from stratus.ui.guard import CSP
from stratus.ui.signin import session_cookie

SignIn = Callable[[str], tuple[httpx.Client, str]]


def console_routes() -> list[tuple[str, str]]:
    """(method, path below /ui) of every console route, C2's pages included, path parameters filled in."""
    routers = [m.router for m in (console_app.signin, console_app.overview, console_app.usage)]
    routers += [console_app.audit.router, console_app.admin.router, *pages.ROUTERS]
    found = []
    for router in routers:
        for route in router.routes:
            # Numbered parameters (a version) get 1, names x1 (a test puts a real name in its place).
            path = re.sub(r"\{[^}]*version[^}]*\}", "1", getattr(route, "path", ""))
            path = re.sub(r"\{[^}]+\}", "x1", path)
            for method in sorted(getattr(route, "methods", None) or []):
                if method != "HEAD" and path != "/sign-in":
                    found.append((method, path))
    return found


def test_without_a_session_every_route_redirects_to_sign_in(console_server: LiveServer) -> None:
    routes = console_routes()
    assert ("GET", "/") in routes and ("POST", "/keys") in routes and ("POST", "/sign-out") in routes
    with httpx.Client(base_url=console_server.url, follow_redirects=False) as anonymous:
        for method, path in routes:
            answer = anonymous.request(method, "/ui" + path)
            assert answer.status_code == 303, (method, path, answer.status_code)
            assert answer.headers["location"].startswith("/ui/sign-in"), (method, path)
            assert answer.headers["content-security-policy"] == CSP
        # A session cookie that names no session is no better, and is cleared.
        answer = anonymous.get("/ui/", headers={"cookie": "stratus_console=forged"})
        assert answer.status_code == 303 and "Max-Age=0" in answer.headers["set-cookie"]
        # Scripts' calls through the bridge get 401, not a page.
        assert anonymous.get("/ui/bridge/api/v1/models").status_code == 401
        assert anonymous.get("/ui/sign-in").status_code == 200


def test_sign_in_cookie_csp_and_sign_out(
    console_server: LiveServer, console_keys: Callable[..., str], request: pytest.FixtureRequest
) -> None:
    key = console_keys("manage")
    client = httpx.Client(base_url=console_server.url, follow_redirects=False)
    request.addfinalizer(client.close)
    refused = client.post("/ui/sign-in", data={"api_key": key[:-2] + "xx"})
    assert refused.status_code == 401 and "stratus_console" not in refused.headers.get("set-cookie", "")
    answer = client.post("/ui/sign-in", data={"api_key": key, "next": "https://evil.example/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/"  # never off-site
    cookie = answer.headers["set-cookie"]
    assert {"HttpOnly", "SameSite=Strict", "Path=/ui"} <= {p.strip() for p in cookie.split(";")}
    assert "Secure" not in cookie  # plain HTTP here; under TLS it is Secure (test below)
    session_id = client.cookies["stratus_console"]
    assert key not in cookie and session_id not in key
    for path in ("/ui/", "/ui/usage", "/ui/sign-in", "/ui/no-such-page", "/ui/static/console.js"):
        page = client.get(path)
        assert page.headers["content-security-policy"] == CSP, path
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        assert key not in page.text  # the key is never put in a page
    home = client.get("/ui/", headers={"accept-encoding": "gzip"})
    assert home.headers["content-encoding"] == "gzip" and home.headers["cache-control"] == "no-store"
    asset = client.get(re.search(r'src="(/ui/static/console\.js\?v=\w+)"', home.text).group(1))  # type: ignore[union-attr]
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    # The database holds only the session id's hash.
    db = Database(Settings(home=console_server.home).resolved_database_url)
    try:
        with db.read() as s:
            row = s.get(ConsoleSessionRow, session_hash(session_id))
            assert row is not None and row.id_hash != session_id and session_id not in row.csrf_token
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', home.text).group(1)  # type: ignore[union-attr]
        assert client.post("/ui/sign-out", data={"csrf_token": csrf}).status_code == 303
        with db.read() as s:
            assert s.get(ConsoleSessionRow, session_hash(session_id)) is None  # ended on the server
    finally:
        db.dispose()
    replay = httpx.get(
        f"{console_server.url}/ui/", headers={"cookie": f"stratus_console={session_id}"}, timeout=scaled(30)
    )
    assert replay.status_code == 303


def test_the_cookie_is_secure_under_tls() -> None:
    request = Request({"type": "http", "scheme": "https", "server": ("h", 443), "path": "/ui/sign-in", "headers": []})
    assert session_cookie(request, "abc", 60).endswith("SameSite=Strict; Secure")


def test_csrf_token_and_origin_are_required(
    console_server: LiveServer,
    console_keys: Callable[..., str],
    http_session: SignIn,
) -> None:
    client, csrf = http_session(console_keys("admin"))
    outsider = console_keys("read")
    form = {"project": "default", "scope": "read", "name": "csrf probe"}
    before = len(console_server.get(f"{console_server.url}/api/v1/keys").json()["keys"])
    # A cross-site form post: the browser sends the cookie only with SameSite=Strict's consent, and the server
    # refuses it anyway without the token (and with a foreign Origin even with it).
    assert client.post("/ui/keys", data=form).status_code == 403
    assert client.post("/ui/keys", data={**form, "csrf_token": "wrong"}).status_code == 403
    foreign = {"origin": "https://evil.example", "sec-fetch-site": "cross-site"}
    assert client.post("/ui/keys", data={**form, "csrf_token": csrf}, headers=foreign).status_code == 403
    assert client.post("/ui/bridge/api/v1/projects", json={"name": "no-token"}).status_code == 403
    # Nor can another site sign a browser in (with a key of its own): login CSRF.
    with httpx.Client(base_url=console_server.url) as other:
        signed = other.post("/ui/sign-in", data={"api_key": outsider}, headers=foreign)
        assert signed.status_code == 403 and "stratus_console" not in other.cookies
    assert len(console_server.get(f"{console_server.url}/api/v1/keys").json()["keys"]) == before
    assert client.post("/ui/keys", data={**form, "csrf_token": csrf}).status_code == 201
    made = client.post("/ui/bridge/api/v1/projects", json={"name": "via-bridge"}, headers={"x-csrf-token": csrf})
    assert made.status_code == 201, made.text
    # Bad form values are a 4xx page, never a 500.
    bad = client.post("/ui/projects", data={"name": "bad-limits", "rate_limit_rps": "fast", "csrf_token": csrf})
    assert bad.status_code == 400 and "must be a number" in bad.text


def test_a_read_session_cannot_change_anything(
    console_server: LiveServer,
    console_keys: Callable[..., str],
    http_session: SignIn,
) -> None:
    client, csrf = http_session(console_keys("read"))
    token = {"x-csrf-token": csrf}
    assert client.get("/ui/").status_code == 200
    assert client.get("/ui/keys").status_code == 403  # admin pages
    assert client.get("/ui/audit").status_code == 403
    assert client.post("/ui/keys", data={"project": "default", "scope": "admin", "csrf_token": csrf}).status_code == 403
    assert client.post("/ui/projects", data={"name": "read-made", "csrf_token": csrf}).status_code == 403
    upload = client.post(
        "/ui/bridge/api/v1/models/read-made/versions", files={"file": ("m.onnx", affine_model())}, headers=token
    )
    assert upload.status_code == 403, upload.text
    assert (
        client.put("/ui/bridge/api/v1/models/iris/aliases/prod", json={"version": 1}, headers=token).status_code == 403
    )
    assert client.post("/ui/bridge/api/v1/datasets/builtin", json={"name": "iris"}, headers=token).status_code == 403
    refused = client.post("/ui/bridge/v2/models/iris/infer", headers=token, json={"inputs": []})
    assert refused.status_code == 403  # read may not even predict
    assert client.get("/ui/bridge/api/v1/models/read-made").status_code == 404


def test_project_a_never_sees_project_b(
    console_server: LiveServer,
    console_keys: Callable[..., str],
    http_session: SignIn,
) -> None:
    key_b = console_keys("manage", "tenant-b")
    made = httpx.post(
        f"{console_server.url}/api/v1/models/secret-of-b/versions",
        files={"file": ("m.onnx", affine_model())},
        headers=bearer(key_b),
        timeout=scaled(30),
    )
    assert made.status_code == 201, made.text
    client_a, _ = http_session(console_keys("manage", "default"))
    client_b, _ = http_session(key_b)
    assert "secret-of-b" in client_b.get("/ui/").text
    assert "secret-of-b" in client_b.get("/ui/bridge/api/v1/models").text
    pages_of_a = [
        "/ui/bridge/api/v1/models",
        *["/ui" + p.replace("x1", "secret-of-b") for m, p in console_routes() if m == "GET"],
    ]
    for path in pages_of_a:
        answer = client_a.get(path)
        if "secret-of-b" in path:  # asked for by name: not found, as if it did not exist (the 404 echoes the name)
            assert answer.status_code == 404, (path, answer.status_code)
        else:
            assert answer.status_code in (200, 403), (path, answer.status_code)
            assert "secret-of-b" not in answer.text, path
    assert client_a.get("/ui/bridge/api/v1/models/secret-of-b").status_code == 404


def test_revoking_the_key_ends_its_sessions(
    console_server: LiveServer,
    console_keys: Callable[..., str],
    http_session: SignIn,
) -> None:
    key = console_keys("manage")
    client, _ = http_session(key)
    key_id = key.split("_")[1]
    assert console_server.delete(f"{console_server.url}/api/v1/keys/{key_id}").status_code == 200
    answer = client.get("/ui/")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/sign-in")
    assert client.get("/ui/bridge/api/v1/models").status_code == 401


def test_an_expired_session_ends(
    console_server: LiveServer,
    console_keys: Callable[..., str],
    http_session: SignIn,
) -> None:
    client, _ = http_session(console_keys("read"))
    db = Database(Settings(home=console_server.home).resolved_database_url)
    try:
        with db.write() as s:
            row = s.get(ConsoleSessionRow, session_hash(client.cookies["stratus_console"]))
            assert row is not None
            row.expires_at = row.created_at
    finally:
        db.dispose()
    assert client.get("/ui/").status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/", "/ui/\\evil", "https://evil.example/ui/", "/api/v1/keys"])
def test_sign_in_goes_only_to_a_console_page(target: str) -> None:
    from stratus.ui.signin import local_target

    assert local_target(target) == "/ui/"


def test_the_serve_banner_names_the_console(console_server: LiveServer) -> None:
    from stratus.cli.serve import banner

    text = banner(Settings(host="127.0.0.1", port=console_server.port, home=console_server.home))
    url = text.split("console:", 1)[1].split()[0]
    assert url == f"{console_server.url}/ui/"
    answer = httpx.get(url, follow_redirects=False, timeout=scaled(30))
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/sign-in")


def test_an_edge_device_key_cannot_use_the_console(console_server: LiveServer) -> None:
    """A device's key (scope edge) may sync bundles and send telemetry only: no console session, no page."""
    token = console_server.post(f"{console_server.url}/api/v1/device-tokens", json={})
    assert token.status_code == 201, token.text
    enrolled = httpx.post(
        f"{console_server.url}/api/v1/device/enroll",
        json={"token": token.json()["token"], "name": "console-probe"},
        timeout=scaled(30),
    )
    assert enrolled.status_code == 201, enrolled.text
    with httpx.Client(base_url=console_server.url, follow_redirects=False) as device:
        answer = device.post("/ui/sign-in", data={"api_key": enrolled.json()["key"]})
        assert answer.status_code == 403 and "needs the read scope" in answer.text
        assert "stratus_console" not in device.cookies
