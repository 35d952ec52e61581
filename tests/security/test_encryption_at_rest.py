"""Encryption at rest: nothing plain on disk, tampering and truncation caught, master-key rotation that
re-wraps keys without rewriting data, interrupted rotations completed, private key files."""

from __future__ import annotations

import base64
import io
import os
import secrets
from pathlib import Path

import pytest

from onnx_factory import affine_model
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
