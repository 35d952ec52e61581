"""Security on a real server: keys across processes, rate limits, exact usage metering through the CLI,
encryption at rest with a master-key rotation, TLS, and the refusal to expose an unauthenticated API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import LiveServer, bearer, free_port, run_cli, scaled, start_server
from onnx_factory import affine_model

pytestmark = pytest.mark.slow

ROW = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
THREE_ROWS = {"inputs": [{"name": "x", "shape": [3, 3], "datatype": "FP32", "data": list(range(9))}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("secure") / "home", None)
    r = server.post(f"{server.url}/api/v1/models/affine/versions", files={"file": ("a.onnx", affine_model())})
    assert r.status_code == 201, r.text
    yield server
    server.stop()


def _infer(server: LiveServer, key: str, body: dict[str, object] = ROW) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/affine/infer", json=body, headers=bearer(key), timeout=scaled(30))


def test_unauthenticated_infer_is_401_and_health_is_open(server: LiveServer) -> None:
    r = httpx.post(f"{server.url}/v2/models/affine/infer", json=ROW, timeout=scaled(30))
    assert r.status_code == 401
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=scaled(30)).status_code == 200


def test_key_revoked_by_another_process_fails_within_a_second(server: LiveServer) -> None:
    from stratus.store import Database
    from stratus.store.tables import ApiKey, utcnow

    key = server.post(f"{server.url}/api/v1/keys", json={"scopes": ["predict"]}).json()
    assert _infer(server, key["key"]).status_code == 200
    # Revoke straight in the shared DB, as a second server process on the same store would.
    db = Database(f"sqlite:///{server.home / 'stratus.db'}")
    try:
        with db.write() as s:
            s.get(ApiKey, key["id"]).revoked_at = utcnow()
    finally:
        db.dispose()
    # The server trusts a verified key for key_cache_seconds (at most 1 s) from its last DB read, which came
    # before the revocation: once a second has passed, the next request must read the revoked row.
    time.sleep(1.05)
    assert _infer(server, key["key"]).status_code == 401


def test_low_rate_limit_gives_429_with_retry_after(server: LiveServer) -> None:
    key = server.post(f"{server.url}/api/v1/keys", json={"scopes": ["predict"], "rate_limit_rps": 2}).json()
    statuses = []
    with httpx.Client(base_url=server.url, headers=bearer(key["key"])) as client:
        for _ in range(10):  # bounded: ten requests as fast as they go
            r = client.post("/v2/models/affine/infer", json=ROW)
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1
                assert "rate limit" in r.json()["error"]
    assert 200 in statuses and 429 in statuses


def test_usage_cli_counts_exactly_the_requests_sent(server: LiveServer) -> None:
    run_cli("projects", "create", "metered", url=server.url)
    created = run_cli("keys", "create", "--scopes", "predict", "--project", "metered", "--json", url=server.url)
    key = json.loads(created.stdout)
    assert key["project"] == "metered"
    r = server.post(
        f"{server.url}/api/v1/models/affine/versions",
        files={"file": ("a.onnx", affine_model())},
        headers=bearer(_manage_key(server, "metered")),
    )
    assert r.status_code == 201, r.text
    for _ in range(17):
        assert _infer(server, key["key"]).status_code == 200
    for _ in range(4):
        assert _infer(server, key["key"], THREE_ROWS).status_code == 200
    assert _infer(server, key["key"], {"inputs": []}).status_code == 400  # failures are not billed
    out = run_cli("usage", "--project", "metered", "--group-by", "key,model", "--json", url=server.url)
    report = json.loads(out.stdout)
    rows = [row for row in report["rows"] if row["group"]["key"] == key["id"]]
    assert len(rows) == 1
    assert rows[0]["group"]["model"] == "affine"
    assert rows[0]["requests"] == 21 and rows[0]["items"] == 17 + 4 * 3
    table = run_cli("usage", "--project", "metered", "--group-by", "key", url=server.url).stdout
    assert key["id"] in table and "21" in table and "29" in table


def _manage_key(server: LiveServer, project: str) -> str:
    created = server.post(f"{server.url}/api/v1/keys", json={"scopes": ["manage"], "project": project}).json()
    key: str = created["key"]
    return key


def test_serve_refuses_network_interface_without_auth(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "stratus", "serve", "--host", "0.0.0.0", "--no-auth", "--no-samples"]
    result = subprocess.run(
        [*args, "--port", str(free_port()), "--home", str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0 with --no-auth" in result.stdout + result.stderr


def test_no_auth_mode_on_loopback(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home", None, "--no-auth")
    try:
        r = httpx.post(
            f"{server.url}/api/v1/models/affine/versions",
            files={"file": ("a.onnx", affine_model())},
            timeout=scaled(30),
        )
        assert r.status_code == 201
        assert httpx.post(f"{server.url}/v2/models/affine/infer", json=ROW, timeout=scaled(30)).status_code == 200
    finally:
        server.stop()


def test_bootstrap_key_printed_once_and_kept_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key_file = tmp_path / "secret" / "admin.key"
    first = start_server(home, None, "--admin-key-file", str(key_file))
    first.stop()
    key = key_file.read_text().strip()
    assert key.startswith("stk_") and key_file.stat().st_mode & 0o777 == 0o600
    assert first.log.read_text().count(key) == 1
    second = start_server(home, None, "--admin-key-file", str(key_file))
    try:
        assert key not in second.log.read_text()
        assert httpx.get(f"{second.url}/api/v1/whoami", headers=bearer(key), timeout=scaled(30)).json()["scopes"] == [
            "admin"
        ]
    finally:
        second.stop()


def test_keys_and_audit_through_the_cli(server: LiveServer) -> None:
    created = json.loads(run_cli("keys", "create", "--scopes", "read", "--name", "ci", "--json", url=server.url).stdout)
    listed = json.loads(run_cli("keys", "list", "--json", url=server.url).stdout)
    assert created["id"] in {k["id"] for k in listed} and all("key" not in k for k in listed)
    assert (
        httpx.get(f"{server.url}/api/v1/models", headers=bearer(created["key"]), timeout=scaled(30)).status_code == 200
    )
    run_cli("keys", "revoke", created["id"], url=server.url)
    assert (
        httpx.get(f"{server.url}/api/v1/models", headers=bearer(created["key"]), timeout=scaled(30)).status_code == 401
    )
    events = json.loads(run_cli("audit", "--limit", "20", "--json", url=server.url).stdout)
    revoke = next(e for e in events if e["action"] == "DELETE /api/v1/keys/{key_id}")
    assert revoke["target"] == f"/api/v1/keys/{created['id']}" and revoke["status"] == 200
    assert revoke["address"] == "127.0.0.1"
    # A key given on the command line wins over the local admin key file.
    denied = run_cli("--api-key", created["key"], "models", "list", url=server.url, check=False)
    assert denied.returncode == 1 and "revoked" in denied.stderr


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_tls(tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    tls = ("--tls-cert", str(cert), "--tls-key", str(key), "--grpc-port", str(free_port()))
    server = start_server(tmp_path / "home", None, *tls, scheme="https")
    try:
        # gRPC on its own port takes the same certificate.
        import tritonclient.grpc as triton_grpc

        grpcs = triton_grpc.InferenceServerClient(
            f"127.0.0.1:{server.grpc_port}", ssl=True, root_certificates=str(cert)
        )
        assert grpcs.get_server_metadata(headers={"authorization": f"Bearer {server.admin_key}"}).name == "stratus"
        grpcs.close()
        context = ssl.create_default_context(cafile=str(cert))
        https = server.url
        assert https.startswith("https://")
        r = httpx.get(f"{https}/api/v1/whoami", headers=server.headers, verify=context, timeout=scaled(30))
        assert r.status_code == 200 and r.json()["scopes"] == ["admin"]
        with pytest.raises(httpx.TransportError):  # plain HTTP is not served on the TLS port
            httpx.get(https.replace("https://", "http://") + "/v2/health/live", timeout=5)
    finally:
        server.stop()


def test_no_plain_model_on_disk_and_serving_survives_a_master_key_rotation(tmp_path: Path) -> None:
    home = tmp_path / "home"
    model = affine_model(scale=3.0)
    server = start_server(home, None)
    try:
        r = server.post(f"{server.url}/api/v1/models/affine/versions", files={"file": ("a.onnx", model)})
        assert r.status_code == 201
        before = _infer(server, server.admin_key).json()["outputs"][0]["data"]
    finally:
        server.stop()
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert model[:48] not in data and model[-48:] not in data, f"plain model bytes in {path}"
    old_key = (home / "master.key").read_text()
    run_cli("keys", "rotate-master", "--home", str(home))
    assert (home / "master.key").read_text() != old_key
    assert (home / "master.key").stat().st_mode & 0o777 == 0o600
    server = start_server(home, None)
    try:
        server.post(f"{server.url}/v2/repository/models/affine/unload", json={})
        assert _infer(server, server.admin_key).json()["outputs"][0]["data"] == before
    finally:
        server.stop()
