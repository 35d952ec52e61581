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
