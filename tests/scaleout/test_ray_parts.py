"""The Ray executor's and placement's parts that need no cluster: the token-auth gate, the sealing of what crosses
Ray, the job result kept in its folder, replica target keys, and the settings and flags that choose Ray."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from cryptography.exceptions import InvalidTag
from pydantic import ValidationError
from typer.testing import CliRunner

from stratus import raycluster
from stratus.cli.app import app
from stratus.deploy.bundle import MANIFEST
from stratus.deploy.ray_placement import target_key
from stratus.jobs.ray_executor import keep_result
from stratus.settings import Settings


def test_the_server_refuses_a_ray_cluster_without_token_authentication(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    with pytest.raises(RuntimeError, match="RAY_AUTH_MODE=token"):
        raycluster.check_auth(home)
    with pytest.raises(RuntimeError, match="RAY_AUTH_MODE=token"):
        raycluster.check_auth({**home, "RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "x"})
    with pytest.raises(RuntimeError, match="no token"):
        raycluster.check_auth({**home, "RAY_AUTH_MODE": "token"})
    raycluster.check_auth({**home, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "t")})
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("secret")  # Ray's default token file counts
    raycluster.check_auth({**home, "RAY_AUTH_MODE": "token"})


def test_what_crosses_ray_is_sealed_under_a_fresh_key_and_tampering_is_caught() -> None:
    data = b"feature,label\n" * 1000
    key, sealed = raycluster.seal(data)
    again_key, again = raycluster.seal(data)
    assert key != again_key and sealed != again and data not in sealed
    assert raycluster.unseal(key, sealed) == data
    assert raycluster.seal(b"result", key)[0] == key  # the result comes back under the job's own key
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(InvalidTag):
        raycluster.unseal(key, flipped)
    with pytest.raises(InvalidTag):
        raycluster.unseal(again_key, sealed)


def test_a_job_result_is_kept_in_its_folder_and_a_name_outside_it_is_refused(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    keep_result(job, {"model.onnx": b"onnx", "plots/confusion.png": b"png"})
    assert (job / "model.onnx").read_bytes() == b"onnx" and (job / "plots" / "confusion.png").read_bytes() == b"png"
    assert (job / "model.onnx").stat().st_mode & 0o777 == 0o600
    for name in ("../escape", "/etc/cron.d/x", "plots/../../escape", "."):
        with pytest.raises(ValueError, match="outside its folder"):
            keep_result(job, {name: b"x"})
    assert not (tmp_path / "escape").exists()


def test_a_replica_target_key_names_the_bundle_bytes_whatever_their_order() -> None:
    entries = {"endpoint.json": b"{}", "models/iris/1/model.onnx": b"\x08\x07"}
    assert target_key(entries) == target_key(dict(reversed(list(entries.items()))))
    assert target_key(entries) != target_key({**entries, "models/iris/1/model.onnx": b"\x08\x08"})
    # Two servers build the same target's bundle at different moments: its key is the same.
    manifest = {"format": 1, "endpoint": "iris", "created_at": "2026-12-02T04:00:00+00:00", "routes": []}
    later = {**manifest, "created_at": "2026-12-02T04:00:07+00:00"}
    assert target_key({MANIFEST: orjson.dumps(manifest)}) == target_key({MANIFEST: orjson.dumps(later)})
    assert target_key({MANIFEST: orjson.dumps(manifest)}) != target_key(
        {MANIFEST: orjson.dumps({**later, "endpoint": "x"})}
    )
    # Names and bytes are framed: moving a byte from one entry to the next changes the key.
    assert target_key({"a": b"bc", "d": b""}) != target_key({"a": b"b", "d": b"c"})


def test_ray_needs_an_address_in_settings_and_on_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="ray_address"):
        Settings(executor="ray")
    with pytest.raises(ValidationError, match="ray_address"):
        Settings(placement="ray")
    with pytest.raises(ValidationError):
        Settings(executor="kubernetes")  # type: ignore[arg-type]
    assert Settings(executor="ray", placement="ray", ray_address="127.0.0.1:6379").placement == "ray"
    for name in ("STRATUS_EXECUTOR", "STRATUS_PLACEMENT", "STRATUS_RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    refused = runner.invoke(app, ["serve", "--executor", "ray"])
    assert refused.exit_code == 2 and "ray_address" in refused.output
    unknown = runner.invoke(app, ["serve", "--placement", "yarn"])
    assert unknown.exit_code == 2 and "local or ray" in unknown.output
