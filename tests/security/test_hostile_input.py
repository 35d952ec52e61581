"""Hostile input through the HTTP API: path traversal in every path parameter and upload name, zip-slip and
zip bombs, pickles, oversized bodies, and URLs that a careless server would fetch (SSRF)."""

from __future__ import annotations

import io
import pickle
import re
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import as_admin, make_settings
from onnx_factory import affine_model
from stratus.api import create_app

# A bare ".." segment is resolved by the HTTP client before it is sent; these reach the server as they are.
TRAVERSALS = [
    "%2e%2e",
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%5c..%5cwindows",
    "%2Fetc%2Fpasswd",
    "etc%00passwd",
    "a%00.onnx",
    "....//....//etc",
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("hostile") / "home"
    with TestClient(create_app(make_settings(home, max_request_bytes=64 * 1024)), raise_server_exceptions=False) as c:
        as_admin(c)
        assert c.post("/api/v1/models/affine/versions", files={"file": ("a.onnx", affine_model())}).status_code == 201
        yield c


def _routes_with_params(client: TestClient) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return [(m.upper(), p) for p, item in spec["paths"].items() for m in item if "{" in p]


def _files_under(home: Path) -> set[Path]:
    return {p for p in home.rglob("*") if p.is_file()}


def test_traversal_in_every_path_parameter(client: TestClient, tmp_path: Path) -> None:
    platform = client.app.state.platform  # type: ignore[attr-defined]
    before = _files_under(platform.settings.home)
    secret = "root:x:0:0"
    checked = 0
    for method, path in _routes_with_params(client):
        for attempt in TRAVERSALS:
            url = re.sub(r"\{\w+\}", attempt, path)
            kwargs: dict[str, Any] = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            r = client.request(method, url, **kwargs)
            assert 400 <= r.status_code < 500, (method, url, r.status_code, r.text[:200])
            assert secret not in r.text
            checked += 1
    assert checked > 300
    # Nothing was written where it should not be: new files, if any, are the store's own (DB journal).
    created = {p for p in _files_under(platform.settings.home) - before if "artifacts" in p.parts}
    assert created == set()


@pytest.mark.parametrize("filename", ["../../evil.onnx", "/etc/cron.d/evil", "a\x00.onnx", "..\\..\\evil.onnx"])
def test_upload_file_names_never_become_paths(client: TestClient, filename: str, tmp_path: Path) -> None:
    name = f"upload-{abs(hash(filename)) % 10_000}"
    r = client.post(f"/api/v1/models/{name}/versions", files={"file": (filename, affine_model())})
    assert r.status_code == 201, r.text
    assert filename not in r.text
    home = client.app.state.platform.settings.home  # type: ignore[attr-defined]
    assert not (home.parent / "evil.onnx").exists() and not Path("/etc/cron.d/evil").exists()


@pytest.mark.parametrize("name", ["../x", "a/b", "x\x00", "..", ".hidden", "A" * 65])
def test_traversal_in_names_from_bodies_is_refused(client: TestClient, name: str) -> None:
    r = client.post("/api/v1/models", json={"name": name})
    assert r.status_code in (400, 422), r.text
    r = client.post("/api/v1/datasets", data={"name": name}, files={"file": ("d.csv", b"a,b\n1,2\n")})
    assert r.status_code in (400, 422), r.text
    r = client.post(
        "/api/v1/models/pipe/versions",
        data={"format": "pipeline"},
        files=[("file", ("p.json", b"{}")), ("files", (name, b"x"))],
    )
    assert r.status_code in (400, 413, 415, 422), r.text


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_zip_slip_and_zip_bomb_datasets_are_refused(client: TestClient) -> None:
    home = client.app.state.platform.settings.home  # type: ignore[attr-defined]
    slip = _zip({"../../escaped/a.png": b"x", "ok/b.png": b"y"})
    r = client.post("/api/v1/datasets", data={"name": "slip", "format": "images"}, files={"file": ("s.zip", slip)})
    assert r.status_code == 400 and "zip-slip" in r.json()["error"]
    assert not any(p.name == "escaped" for p in home.parent.rglob("escaped"))
    bomb = _zip({"a/big.png": b"\0" * (64 * 1024 * 1024)})
    assert len(bomb) < 128 * 1024
    # The bomb fits under the request limit; the archive reader refuses to inflate it.
    with TestClient(client.app, raise_server_exceptions=False) as roomy:
        roomy.headers.update(client.headers)
        r = roomy.post("/api/v1/datasets", data={"name": "bomb", "format": "images"}, files={"file": ("b.zip", bomb)})
    assert r.status_code in (400, 413) and ("zip bomb" in r.json()["error"] or "limit" in r.json()["error"])


def test_pickles_are_never_loaded(client: TestClient, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    payload = pickle.dumps(Exploit())
    for filename in ("model.pkl", "model.onnx", "model.joblib", "model.pt"):
        r = client.post("/api/v1/models/pickled/versions", files={"file": (filename, payload)})
        assert r.status_code == 415, r.text
    r = client.post("/api/v1/datasets", data={"name": "pickled"}, files={"file": ("d.npz", payload)})
    assert r.status_code == 400
    assert not marker.exists()


def test_oversized_bodies_are_413(client: TestClient) -> None:
    big = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.0] * 100_000}]}
    r = client.post("/v2/models/affine/infer", json=big)
    assert r.status_code == 413 and "limit" in r.json()["error"]


class _Listener:
    """A loopback TCP server that counts connections: the target a fetched URL would reach."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def test_no_request_makes_the_server_fetch_a_url(client: TestClient) -> None:
    listener = _Listener()
    url = f"http://127.0.0.1:{listener.port}/model.onnx"
    try:
        attempts = [
            ("POST", "/v2/repository/models/affine/load", {"json": {"parameters": {"uri": url}}}),
            ("POST", "/v2/repository/models/affine/load", {"json": {"parameters": {"config": url, "file:x": url}}}),
            ("POST", f"/v2/repository/models/{url}/load", {"json": {}}),
            ("POST", "/api/v1/models/remote/versions", {"data": {"url": url, "source": url}}),
            ("POST", "/api/v1/datasets", {"data": {"name": "remote", "url": url}}),
            ("POST", "/api/v1/jobs", {"json": {"dataset": url, "model": "logistic_regression"}}),
            ("POST", "/v2/models/affine/infer", {"json": {"inputs": [{"name": "x", "parameters": {"uri": url}}]}}),
        ]
        for method, path, kwargs in attempts:
            r = client.request(method, path, **kwargs)
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        assert listener.connections == 0
    finally:
        listener.close()
