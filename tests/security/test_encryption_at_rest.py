"""Encryption at rest: nothing plain on disk, tampering and truncation caught, master-key rotation that
re-wraps keys without rewriting data, interrupted rotations completed, private key files."""

from __future__ import annotations

import base64
import io
import os
import re
import secrets
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import ROOT, as_admin, make_settings, scaled
from onnx_factory import affine_model
from stratus.api import create_app
from stratus.errors import IntegrityError, InvalidInput, StratusError
from stratus.security.encryption import CHUNK, Keyring
from stratus.security.rotation import rotate_master_key
from stratus.settings import Settings
from stratus.store import ArtifactStore

PLAIN = b"RECOGNISABLE-PLAINTEXT-" * 1000


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_nothing_on_disk_is_plain(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, Keyring.generate())
    model = affine_model()
    digests = [store.put_bytes(PLAIN).digest, store.put_bytes(model).digest]
    blobs = _files(tmp_path)
    assert len(blobs) == 4  # two blobs, two wrapped keys
    for data in blobs.values():
        assert b"RECOGNISABLE-PLAINTEXT" not in data
        assert model[-64:] not in data and model[:64] not in data
    assert store.read(digests[0]) == PLAIN and store.read(digests[1]) == model


def test_big_streams_are_sealed_in_chunks(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, Keyring.generate())
    data = os.urandom(5 * CHUNK + 123)
    stored = store.put_stream(io.BytesIO(data))
    assert stored.size == len(data) and store.read(stored.digest) == data
    assert store.read(store.put_bytes(b"").digest) == b""


@pytest.mark.parametrize("damage", ["flip", "truncate", "drop-last-chunk", "swap-key"])
def test_tampering_is_an_integrity_error(tmp_path: Path, damage: str) -> None:
    store = ArtifactStore(tmp_path, Keyring.generate())
    digest = store.put_stream(io.BytesIO(os.urandom(2 * CHUNK + 10))).digest
    other = store.put_bytes(b"another blob").digest
    blob = store._path(digest)
    data = bytearray(blob.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 1
    elif damage == "truncate":
        del data[-5:]
    elif damage == "drop-last-chunk":
        del data[-(10 + 16) :]
    else:
        store._key_path(digest).write_bytes(store._key_path(other).read_bytes())
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        store.read(digest)


def test_a_wrong_master_key_is_a_clear_error(tmp_path: Path) -> None:
    digest = ArtifactStore(tmp_path, Keyring.generate()).put_bytes(PLAIN).digest
    with pytest.raises(IntegrityError, match=r"master key \w+, which this server does not have"):
        ArtifactStore(tmp_path, Keyring.generate()).read(digest)


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(home=tmp_path / "home", **overrides)  # type: ignore[arg-type]


def test_key_file_is_created_private_and_refused_when_readable_by_others(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    keyring = Keyring.from_settings(settings)
    path = settings.resolved_master_key_file
    assert path.stat().st_mode & 0o777 == 0o600
    assert Keyring.from_settings(settings).current == keyring.current
    path.chmod(0o644)
    with pytest.raises(StratusError, match="chmod 600"):
        Keyring.from_settings(settings)


def test_rotation_rewraps_keys_without_rewriting_data(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = ArtifactStore(settings.artifact_dir, Keyring.from_settings(settings))
    digests = [store.put_bytes(PLAIN + bytes([i])).digest for i in range(5)]
    old_key = Keyring.from_settings(settings).current
    blobs_before = {p: d for p, d in _files(settings.artifact_dir).items() if not p.name.endswith(".key")}
    assert rotate_master_key(settings) == 5
    after = _files(settings.artifact_dir)
    assert {p: d for p, d in after.items() if not p.name.endswith(".key")} == blobs_before
    new = Keyring.from_settings(settings)
    assert new.current != old_key
    assert not settings.resolved_master_key_file.with_name("master.key.previous").exists()
    rotated = ArtifactStore(settings.artifact_dir, new)
    assert [rotated.read(d) for d in digests] == [PLAIN + bytes([i]) for i in range(5)]
    with pytest.raises(IntegrityError):
        ArtifactStore(settings.artifact_dir, Keyring(old_key)).read(digests[0])


def test_an_interrupted_rotation_still_reads_and_completes(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = ArtifactStore(settings.artifact_dir, Keyring.from_settings(settings))
    digests = [store.put_bytes(PLAIN + bytes([i])).digest for i in range(4)]
    old = Keyring.from_settings(settings).current
    new = secrets.token_bytes(32)
    # The state a crash leaves: old key saved, new key in place, only half the keys re-wrapped.
    key_file = settings.resolved_master_key_file
    key_file.with_name("master.key.previous").write_bytes(base64.b64encode(old))
    key_file.with_name("master.key.previous").chmod(0o600)
    key_file.write_bytes(base64.b64encode(new))
    half = ArtifactStore(settings.artifact_dir, Keyring(new, [old]))
    for digest in digests[:2]:
        path = half._key_path(digest)
        path.write_bytes(half.keyring.wrap(half.keyring.unwrap(path.read_bytes(), digest), digest))
    mid = ArtifactStore(settings.artifact_dir, Keyring.from_settings(settings))
    assert [mid.read(d) for d in digests] == [PLAIN + bytes([i]) for i in range(4)]
    assert rotate_master_key(settings) == 2  # the rest
    done = ArtifactStore(settings.artifact_dir, Keyring(new))
    assert [done.read(d) for d in digests] == [PLAIN + bytes([i]) for i in range(4)]


def test_rotation_with_the_key_in_the_environment(tmp_path: Path) -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    settings = _settings(tmp_path, master_key=base64.b64encode(old).decode())
    digest = ArtifactStore(settings.artifact_dir, Keyring.from_settings(settings)).put_bytes(PLAIN).digest
    with pytest.raises(InvalidInput, match="new-key-file"):
        rotate_master_key(settings)
    assert rotate_master_key(settings, new) == 1
    assert ArtifactStore(settings.artifact_dir, Keyring(new)).read(digest) == PLAIN


# -- the whole home after real use -------------------------------------------------------------------


def _windows(plain: bytes) -> list[bytes]:
    """Three 64-byte slices from inside a plaintext: a file holding the plaintext holds them too, and random
    (sealed) bytes never do. Inside, not the head: a CSV's header or an ONNX's producer name may be metadata."""
    if len(plain) < 256:
        return [plain] if len(plain) >= 32 else []
    return [plain[len(plain) * k // 4 : len(plain) * k // 4 + 64] for k in (1, 2, 3)]


def _wait_job(client: TestClient, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + scaled(120)
    while time.monotonic() < deadline:
        job: dict[str, object] = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            assert job["state"] == "succeeded", job
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end within {scaled(120):.0f} s")


def _documented_cache_files() -> set[str]:
    """The plain files docs/security.md names for the shared sample cache (its "Sample cache" paragraph)."""
    text = (ROOT / "docs" / "security.md").read_text()
    section = text.split("### The sample cache", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"`(\.?[\w-][\w.-]*)`", section))


def test_the_whole_home_holds_no_plain_model_or_dataset(sample_cache: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    rng = np.random.default_rng(7)
    X = rng.normal(size=(240, 4)).round(6)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    csv = ("a,b,c,d,label\n" + "".join(",".join(map(str, row)) + f",{t}\n" for row, t in zip(X, y))).encode()
    plaintexts: dict[str, bytes] = {"dataset.csv": csv}
    with TestClient(create_app(make_settings(home, sample_cache, job_threads=1, payload_log=True))) as raw:
        client = as_admin(raw)
        uploaded = client.post("/api/v1/models/mine/versions", files={"file": ("m.onnx", affine_model(scale=7.0))})
        assert uploaded.status_code == 201, uploaded.text
        dataset = client.post("/api/v1/datasets", data={"name": "points", "target": "label"}, files={"file": csv})
        assert dataset.status_code == 201, dataset.text
        job = client.post(
            "/api/v1/jobs", json={"dataset": "points", "model": "mlp", "name": "points-mlp", "params": {"epochs": 3}}
        )
        assert job.status_code == 201, job.text
        trained = _wait_job(client, job.json()["id"])
        compress = client.post(
            f"/api/v1/models/points-mlp/versions/{trained['version']}/compress",
            json={"methods": ["quantize-dynamic"], "timing_seconds": 0.05},
        )
        assert compress.status_code == 201, compress.text
        _wait_job(client, compress.json()["id"])
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.123456, 3.5, 1.4, 0.2]}]}
        assert client.post("/v2/models/iris/infer", json=body).status_code == 200
        # The inference log holds the request (read back through the API), sealed on disk like the rest.
        logged = client.get("/api/v1/models/iris/log").json()["records"]
        assert any("5.123456" in str(record["inputs"]) for record in logged), logged
        # Every version's bytes, as the registry hands them out: none may be on disk in the clear.
        for model in client.get("/api/v1/models").json()["models"]:
            for version in client.get(f"/api/v1/models/{model['name']}/versions").json()["versions"]:
                base = f"/api/v1/models/{model['name']}/versions/{version['version']}"
                plaintexts[f"{model['name']}:{version['version']}"] = client.get(f"{base}/artifact").content
                for name in version["files"]:
                    plaintexts[f"{model['name']}:{version['version']}/{name}"] = client.get(
                        f"{base}/files/{name}"
                    ).content
    names = {key.split(":")[0] for key in plaintexts}
    assert {"iris", "digits", "minilm", "mine", "points-mlp"} <= names
    assert any("training-weights.npz" in key for key in plaintexts)
    assert "points-mlp:2" in plaintexts  # the compressed variant of the trained version

    on_disk = _files(home)
    assert not any(b"5.123456" in data for data in on_disk.values()), "a logged payload is on disk in the clear"
    assert not any(p.name.endswith((".onnx", ".npz", ".csv")) for p in on_disk)
    for path, data in on_disk.items():
        assert not data.startswith((b"PK\x03\x04", b"\x93NUMPY")), f"{path} is a plain archive or array"
        for what, plain in plaintexts.items():
            for window in _windows(plain):
                assert window not in data, f"{path.relative_to(home)} holds {what} in the clear"
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())  # job folders end with their job

    # The only plain copies of the samples are the public files of the machine's sample cache, all named
    # in docs/security.md, and nothing else of the above is in it.
    cached = {p.name for p in sample_cache.iterdir() if p.is_file()}
    assert cached <= _documented_cache_files(), cached - _documented_cache_files()
    cache_files = _files(sample_cache)
    for what, plain in plaintexts.items():
        # Models and data only: small JSON files (a layer list, an evaluation) share phrasing with the samples'.
        if what.split(":")[0] in ("iris", "digits", "minilm") or what.endswith(".json"):
            continue
        for data in cache_files.values():
            assert not any(window in data for window in _windows(plain)), f"the sample cache holds {what}"
