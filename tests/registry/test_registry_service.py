from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onnx_factory import affine_model
from pg import PostgresServer
from stratus.errors import Conflict, IntegrityError, InvalidInput, NotFound, UnsafeFormat
from stratus.registry import RegistryService
from stratus.security.encryption import Keyring
from stratus.store import ArtifactStore, Database


@pytest.fixture
def registry(tmp_path: Path, database_url: str) -> Iterator[RegistryService]:
    db = Database(database_url)
    db.migrate()
    yield RegistryService(db, ArtifactStore(tmp_path / "artifacts", Keyring.generate()))
    db.dispose()


def test_register_reads_signature_and_numbers_versions(registry: RegistryService) -> None:
    v1 = registry.register_onnx("affine", affine_model(), task="regression", metrics={"rmse": 0.1})
    v2 = registry.register_onnx("affine", affine_model(scale=3.0), parent_version=1, dataset="d1", source="test")
    assert (v1.version, v2.version) == (1, 2)
    spec = v1.signature.inputs[0]
    assert (spec.name, spec.datatype, spec.shape) == ("x", "FP32", (-1, 3))
    assert v1.metrics == {"rmse": 0.1}
    assert (v2.parent_version, v2.dataset, v2.source) == (1, "d1", "test")
    assert registry.get_model("affine").task == "regression"
    assert registry.get_model("affine").versions == (1, 2)


def test_identical_bytes_share_one_blob(registry: RegistryService) -> None:
    a = registry.register_onnx("m", affine_model())
    b = registry.register_onnx("m", affine_model())
    assert a.digest == b.digest
    assert len(list(registry.artifacts.digests())) == 1
    registry.delete_version("m", 1)
    assert len(list(registry.artifacts.digests())) == 1  # still used by version 2
    registry.delete_version("m", 2)
    assert list(registry.artifacts.digests()) == []


@pytest.mark.parametrize("name", ["Iris", "a b", "../etc", "x" * 65, "", "-lead", "a/b", "a\x00b"])
def test_invalid_names_are_refused(registry: RegistryService, name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid model name"):
        registry.register_onnx(name, affine_model())


def test_resolution_order(registry: RegistryService) -> None:
    for scale in (1.0, 2.0, 3.0):
        registry.register_onnx("m", affine_model(scale=scale))
    assert registry.resolve("m").version == 3
    registry.set_alias("m", "production", 1)
    assert registry.resolve("m").version == 1  # production wins when set
    assert registry.resolve("m", "latest").version == 3
    assert registry.resolve("m", "2").version == 2
    registry.set_alias("m", "staging", 2)
    assert registry.resolve("m", "staging").version == 2
    registry.set_alias("m", "staging", 3)  # moved atomically
    assert registry.resolve("m", "staging").version == 3
    with pytest.raises(NotFound, match="no alias 'canary'"):
        registry.resolve("m", "canary")
    with pytest.raises(NotFound, match="no version 9"):
        registry.resolve("m", "9")
    with pytest.raises(NotFound, match="does not exist"):
        registry.resolve("nope")


def test_archive_and_delete_rules(registry: RegistryService) -> None:
    registry.register_onnx("m", affine_model(scale=1.0))
    registry.register_onnx("m", affine_model(scale=2.0))
    registry.set_alias("m", "production", 2)
    with pytest.raises(Conflict, match="move them"):
        registry.set_status("m", 2, "archived")
    with pytest.raises(Conflict):
        registry.delete_version("m", 2)
    registry.set_alias("m", "production", 1)
    registry.set_status("m", 2, "archived")
    assert registry.resolve("m", "latest").version == 1
    with pytest.raises(Conflict, match="only active versions"):
        registry.set_alias("m", "staging", 2)
    registry.delete_model("m")
    with pytest.raises(NotFound):
        registry.get_model("m")
    assert list(registry.artifacts.digests()) == []


def test_explicit_duplicate_version_is_a_conflict_and_stores_nothing(registry: RegistryService) -> None:
    registry.register_onnx("m", affine_model(scale=1.0), version=5)
    with pytest.raises(Conflict, match="already exists"):
        registry.register_onnx("m", affine_model(scale=9.0), version=5)
    assert len(list(registry.artifacts.digests())) == 1


def test_duplicate_version_race(registry: RegistryService) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def register(i: int) -> None:
        barrier.wait()
        try:
            registry.register_onnx("race", affine_model(scale=float(i)), version=1)
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
    assert registry.get_model("race").versions == (1,)
    assert len(list(registry.artifacts.digests())) == 1


def test_bad_uploads_store_nothing(registry: RegistryService) -> None:
    import pickle

    with pytest.raises(UnsafeFormat):
        registry.register_onnx("m", pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(InvalidInput):
        registry.register_onnx("m", b"definitely not onnx")
    with pytest.raises(NotFound):
        registry.get_model("m")
    assert list(registry.artifacts.digests()) == []


def test_tampered_artifact_marks_version_unhealthy(registry: RegistryService) -> None:
    info = registry.register_onnx("m", affine_model())
    path = next(p for p in (registry.artifacts.root / "sha256").glob("??/*") if not p.name.endswith(".key"))
    sealed = path.read_bytes()
    path.write_bytes(sealed[:-1] + bytes([sealed[-1] ^ 1]))  # always a change (the last byte may already be 0)
    with pytest.raises(IntegrityError, match="unhealthy"):
        registry.read_artifact(info)
    after = registry.get_version("m", 1)
    assert after.health == "unhealthy"
    assert "failed authentication" in after.health_reason


def test_garbage_collection_removes_orphans_only(registry: RegistryService) -> None:
    kept = registry.register_onnx("m", affine_model())
    orphan = registry.artifacts.put_bytes(b"left by a crash between blob and row")
    (registry.artifacts.root / "tmp" / "x.part").write_bytes(b"partial")
    assert registry.collect_garbage() == 2
    assert set(registry.artifacts.digests()) == {kept.digest}
    assert not registry.artifacts.exists(orphan.digest)


def _servers(postgres: PostgresServer, tmp_path: Path, count: int) -> tuple[list[RegistryService], Callable[[], None]]:
    """``count`` registries on one PostgreSQL database, each with its own engine (its own writer lock), as that many
    servers would be; they share one artifact folder and master key."""
    name = postgres.create_database()
    keyring = Keyring.generate()
    dbs = [Database(postgres.url(name)) for _ in range(count)]
    registries = [RegistryService(db, ArtifactStore(tmp_path / "artifacts", keyring)) for db in dbs]

    def close() -> None:
        for db in dbs:
            db.dispose()
        postgres.drop_database(name)

    return registries, close


def test_version_race_across_servers(postgres: PostgresServer, tmp_path: Path) -> None:
    """8 servers upload version 1 of a new model at once: one wins, seven get Conflict (409), nothing is half made."""
    registries, close = _servers(postgres, tmp_path, 8)
    outcomes: list[str] = []
    won: list[bytes] = []
    barrier = threading.Barrier(8)

    def register(i: int) -> None:
        data = affine_model(scale=float(i + 1))  # each server its own bytes: the winner's must be what is served
        barrier.wait()
        try:
            registries[i].register_onnx("race", data, version=1)
            outcomes.append("ok")
            won.append(data)
        except Conflict:
            outcomes.append("conflict")
        except BaseException as exc:  # pragma: no cover - reported below
            outcomes.append(repr(exc))

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
        assert registries[3].get_model("race").versions == (1,)
        assert registries[5].read_artifact(registries[5].get_version("race", 1)) == won[0]
        assert len(list(registries[0].artifacts.digests())) == 1  # the losers' blobs were dropped
    finally:
        close()


def test_new_versions_from_several_servers_all_land(postgres: PostgresServer, tmp_path: Path) -> None:
    """Without a version number, concurrent uploads on different servers each get the next one: 6 versions, 1..6."""
    registries, close = _servers(postgres, tmp_path, 6)
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def register(i: int) -> None:
        barrier.wait()
        try:
            registries[i].register_onnx("many", affine_model(scale=float(i + 1)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert registries[0].get_model("many").versions == (1, 2, 3, 4, 5, 6)
    finally:
        close()
