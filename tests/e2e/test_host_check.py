"""DNS rebinding: a loopback server refuses foreign Host headers."""

from __future__ import annotations

import httpx
import pytest

from conftest import LiveServer
from stratus.api.hosts import allowed_host_values

pytestmark = pytest.mark.slow


def test_foreign_host_is_refused_on_loopback(live_server: LiveServer) -> None:
    url = f"{live_server.url}/v2/health/ready"
    r = httpx.get(url, headers={"Host": f"attacker.example:{live_server.port}"})
    assert r.status_code == 400 and "Host header" in r.json()["error"]
    assert httpx.get(url, headers={"Host": "127.0.0.1:1"}).status_code == 400  # wrong port
    for name in ("localhost", "127.0.0.1", "[::1]"):
        assert httpx.get(url, headers={"Host": f"{name}:{live_server.port}"}).status_code == 200


def test_allowed_values() -> None:
    assert allowed_host_values("127.0.0.1", 8080, []) == {"localhost:8080", "127.0.0.1:8080", "[::1]:8080"}
    assert "models.internal:8080" in allowed_host_values("127.0.0.1", 8080, ["models.internal:8080"])  # type: ignore[operator]
    assert allowed_host_values("0.0.0.0", 8080, []) is None


def test_serve_refuses_a_network_interface_without_insecure(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conftest import run_cli

    out = run_cli("serve", "--host", "0.0.0.0", "--port", "9", "--home", str(tmp_path), "--no-samples", check=False)
    assert out.returncode == 1 and "refusing to listen on 0.0.0.0" in out.stderr
    assert "no authentication" in out.stderr


def test_insecure_bind_is_allowed_with_a_loud_warning(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import io

    from rich.console import Console

    from stratus.cli.serve import check_exposure
    from stratus.settings import Settings

    buffer = io.StringIO()
    check_exposure(Settings(home=tmp_path, host="0.0.0.0", insecure=True), Console(file=buffer, width=200))
    assert "NO AUTHENTICATION" in buffer.getvalue()
    check_exposure(Settings(home=tmp_path, host="::1"), Console(file=buffer))  # loopback: fine, silent
