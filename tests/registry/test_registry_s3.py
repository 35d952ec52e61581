"""The registry on the S3 backend (moto on loopback): versions stored sealed and read verified, deletes that leave
young blobs to the collector, and the collector that runs while the server does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import scaled
from onnx_factory import affine_model
from stratus.errors import IntegrityError
from stratus.registry import RegistryService
from stratus.registry.blobs import Collector
from stratus.security.encryption import Keyring
from stratus.store import Database
from stratus.store.s3 import S3ArtifactStore


@pytest.fixture
def on_s3(s3_server: Any, tmp_path: Path) -> Iterator[tuple[Database, Any, str]]:
    db = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    db.migrate()
    yield db, s3_server.client, s3_server.create_bucket()
    db.dispose()


def _registry(on_s3: tuple[Database, Any, str], grace: float) -> RegistryService:
    db, client, bucket = on_s3
    return RegistryService(db, S3ArtifactStore(client, bucket, "models", Keyring.generate(), gc_grace_seconds=grace))


def _blobs(on_s3: tuple[Database, Any, str]) -> list[str]:
    _, client, bucket = on_s3
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_a_version_on_s3_is_sealed_read_verified_and_refused_when_altered(on_s3: tuple[Database, Any, str]) -> None:
    registry = _registry(on_s3, grace=3600)
    version = registry.register_onnx("affine", affine_model())
    assert registry.read_artifact(version) == affine_model()
    [key] = _blobs(on_s3)
    _, client, bucket = on_s3
    stored = client.get_object(Bucket=bucket, Key=key)
    assert affine_model() not in stored["Body"].read()  # sealed before it left the process
    client.copy_object(  # the metadata (the wrapped key) of another blob: it must not open this one
        Bucket=bucket,
        Key=key,
        CopySource={"Bucket": bucket, "Key": key},
        Metadata={"stratus-key": stored["Metadata"]["stratus-key"].replace('"dek":"', '"dek":"A')},
        MetadataDirective="REPLACE",
    )
    with pytest.raises(IntegrityError, match="unhealthy"):
        registry.read_artifact(version)
    assert registry.get_version("affine", 1).health == "unhealthy"


def test_a_deleted_version_s_blob_waits_for_the_grace_period(on_s3: tuple[Database, Any, str]) -> None:
    registry = _registry(on_s3, grace=3600)
    registry.register_onnx("affine", affine_model())
    registry.delete_version("affine", 1)
    assert len(_blobs(on_s3)) == 1  # another server may be registering the same bytes right now
    assert registry.collect_garbage() == 0
    past_grace = _registry(on_s3, grace=0)
    assert past_grace.collect_garbage() == 1
    assert _blobs(on_s3) == []


def test_the_collector_runs_while_the_server_does(on_s3: tuple[Database, Any, str]) -> None:
    registry = _registry(on_s3, grace=0)
    kept = registry.register_onnx("kept", affine_model())
    _, client, bucket = on_s3
    client.put_object(Bucket=bucket, Key=f"models/tmp/{int(time.time())}-killed", Body=b"an interrupted upload")
    rounds: list[int] = []

    def collect() -> int:
        rounds.append(registry.collect_garbage())
        return rounds[-1]

    collector = Collector(collect, interval=0.05)
    collector.start()
    try:
        deadline = time.monotonic() + scaled(10)
        while len(_blobs(on_s3)) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        collector.close()
    assert _blobs(on_s3) == [f"models/sha256/{kept.digest[7:]}"] and sum(rounds) == 1
    assert registry.read_artifact(kept) == affine_model()
