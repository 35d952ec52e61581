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
