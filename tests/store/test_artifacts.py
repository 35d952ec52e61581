from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from stratus.errors import IntegrityError, NotFound, PayloadTooLarge
from stratus.security.encryption import Keyring
from stratus.store import ArtifactStore


def test_put_is_content_addressed_and_deduplicated(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, Keyring.generate())
    first = store.put_bytes(b"hello model")
    second = store.put_bytes(b"hello model")
    assert first == second
    assert first.digest == "sha256:" + hashlib.sha256(b"hello model").hexdigest()
    assert first.size == len(b"hello model")
    assert list(store.digests()) == [first.digest]
    assert store.read(first.digest) == b"hello model"
    assert not list((tmp_path / "tmp").iterdir())


def test_read_refuses_altered_blob(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, Keyring.generate())
    stored = store.put_bytes(b"original bytes")
    path = next(p for p in (tmp_path / "sha256").glob("??/*") if not p.name.endswith(".key"))
    path.write_bytes(b"tampered bytes")
    with pytest.raises(IntegrityError, match="altered"):
        store.read(stored.digest)


def test_missing_blob_is_an_integrity_error(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, Keyring.generate())
    stored = store.put_bytes(b"x")
    store.delete(stored.digest)
    with pytest.raises(IntegrityError, match="missing"):
        store.read(stored.digest)


@pytest.mark.parametrize("digest", ["../../etc/passwd", "sha256:../x", "sha256:" + "g" * 64, "sha256:ABC", ""])
def test_digest_is_the_only_way_to_a_path(tmp_path: Path, digest: str) -> None:
    store = ArtifactStore(tmp_path, Keyring.generate())
    with pytest.raises(NotFound):
        store.read(digest)


def test_oversized_stream_leaves_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, Keyring.generate())
    with pytest.raises(PayloadTooLarge):
        store.put_stream(io.BytesIO(b"x" * 5000), max_bytes=1000)
    assert not list(store.digests())
    assert not list((tmp_path / "tmp").iterdir())


def test_sweep_removes_interrupted_writes(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, Keyring.generate())
    (tmp_path / "tmp" / "abc.part").write_bytes(b"half a model")
    assert store.sweep_temp() == 1
    assert not list((tmp_path / "tmp").iterdir())
