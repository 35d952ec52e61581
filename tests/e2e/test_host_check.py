"""DNS rebinding: a loopback server refuses foreign Host headers."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from conftest import LiveServer, scaled
from stratus.api.hosts import allowed_host_values

pytestmark = pytest.mark.slow


def test_foreign_host_is_refused_on_loopback(live_server: LiveServer) -> None:
    url = f"{live_server.url}/v2/health/ready"
    r = httpx.get(url, headers={"Host": f"attacker.example:{live_server.port}"}, timeout=scaled(30))
    assert r.status_code == 400 and "Host header" in r.json()["error"]
    assert httpx.get(url, headers={"Host": "127.0.0.1:1"}, timeout=scaled(30)).status_code == 400  # wrong port
    for name in ("localhost", "127.0.0.1", "[::1]"):
        assert httpx.get(url, headers={"Host": f"{name}:{live_server.port}"}, timeout=scaled(30)).status_code == 200


def test_allowed_values() -> None:
    assert allowed_host_values("127.0.0.1", 8080, []) == {"localhost:8080", "127.0.0.1:8080", "[::1]:8080"}
    assert "models.internal:8080" in allowed_host_values("127.0.0.1", 8080, ["models.internal:8080"])  # type: ignore[operator]
    assert allowed_host_values("0.0.0.0", 8080, []) is None


def test_exposure_rules(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Keys on: a network bind is allowed (a warning without TLS). No auth: loopback only, unless --insecure,
    which warns loudly. The refusal through `stratus serve` is in test_security_live.py."""
    import io

    import pytest
    from rich.console import Console

    from stratus.cli.serve import check_exposure
    from stratus.errors import InvalidInput
    from stratus.settings import Settings

    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    check_exposure(Settings(home=tmp_path, host="0.0.0.0"), console)
    assert "without TLS" in buffer.getvalue()
    with pytest.raises(InvalidInput, match=r"refusing to listen on 0\.0\.0\.0 with --no-auth"):
        check_exposure(Settings(home=tmp_path, host="0.0.0.0", auth=False), console)
    check_exposure(Settings(home=tmp_path, host="0.0.0.0", auth=False, insecure=True), console)
    assert "NO AUTHENTICATION" in buffer.getvalue()
    check_exposure(Settings(home=tmp_path, host="::1", auth=False), console)  # loopback: fine
    with pytest.raises(InvalidInput, match="go together"):
        check_exposure(Settings(home=tmp_path, tls_cert=tmp_path / "c.pem"), console)


def _raw_request(port: int, head: str, body: bytes = b"") -> bytes:
    """One request over a plain socket, so its headers go out exactly as written (httpx merges repeats)."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_repeated_host_and_framing_headers_get_400(live_server: LiveServer) -> None:
    auth = f"Authorization: Bearer {live_server.admin_key}\n"
    good = f"Host: 127.0.0.1:{live_server.port}\n"
    ok = _raw_request(live_server.port, f"GET /v2/models/iris HTTP/1.1\n{good}{auth}Connection: close\n")
    assert ok.startswith(b"HTTP/1.1 200"), ok[:200]
    for extra in (
        "Host: attacker.example\n",  # an allowed Host first, a foreign one second
        good,
        "Content-Type: application/json\nContent-Type: text/plain\n",
    ):
        head = f"GET /v2/models/iris HTTP/1.1\n{good}{extra}{auth}Connection: close\n"
        answer = _raw_request(live_server.port, head)
        assert answer.startswith(b"HTTP/1.1 400"), (extra, answer[:300])
    # Repeated body framing: refused by the HTTP parser or, failing that, by the app (api/hosts.py).
    body = b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}'
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    post = f"POST /v2/models/iris/infer HTTP/1.1\n{good}{auth}Connection: close\nContent-Type: application/json\n"
    for extra, payload in (
        (f"Content-Length: {len(body)}\nContent-Length: {len(body)}\n", body),
        (f"Content-Length: {len(body)}\nContent-Length: 3\n", body),
        ("Transfer-Encoding: chunked\nTransfer-Encoding: chunked\n", chunked),
        (f"Content-Length: {len(body)}\nTransfer-Encoding: chunked\n", chunked),
        (f"Content-Length: {len(body)}\nContent-Encoding: identity\nContent-Encoding: identity\n", body),
    ):
        answer = _raw_request(live_server.port, post + extra, payload)
        assert answer.startswith(b"HTTP/1.1 400"), (extra, answer[:300])
    answer = _raw_request(live_server.port, post + f"Content-Length: {len(body)}\n", body)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


def test_a_client_gone_mid_body_is_one_info_line(live_server: LiveServer) -> None:
    """Connections that send half their body and close are logged as such, with no ERROR and no traceback."""
    before = live_server.log.read_text()
    body = b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}'
    upload = b'--x\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\nonnx bytes'
    paths = ["/v2/models/iris/infer", "/v1/models/iris:predict", "/v2/repository/index", "/api/v1/models/x/versions"]
    count = 24
    for i in range(count):
        path = paths[i % len(paths)]
        kind, part = "application/json", body
        if path.endswith("/versions"):  # an upload: the start of a valid multipart body
            kind, part = "multipart/form-data; boundary=x", upload
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{live_server.port}\r\n"
            f"Authorization: Bearer {live_server.admin_key}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body) * 10}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", live_server.port), timeout=scaled(10)) as sock:
            sock.sendall(head.encode() + part)
    deadline = time.monotonic() + scaled(10)
    while time.monotonic() < deadline:
        new = live_server.log.read_text()[len(before) :]
        if new.count("disconnected after") >= count:
            break
        time.sleep(0.1)
    new = live_server.log.read_text()[len(before) :]
    assert new.count("disconnected after") == count, new[-3000:]
    assert "Traceback" not in new and " ERROR " not in new, new[-3000:]
    assert all(" INFO " in line for line in new.splitlines() if "disconnected after" in line)
