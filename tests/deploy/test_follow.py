"""What the endpoint-control holder publishes and the other servers follow (deploy/follow.py), on the run's
PostgreSQL: the routes round-trip with their tokens sealed, replicas keep their identity across refreshes (a replica a
follower saw fail stays dead until the holder replaces it), and a removed endpoint goes. And endpoint records changed
on several servers at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from onnx_factory import affine_model
from pg import PostgresServer
from stratus.deploy.controller import Controller
from stratus.deploy.follow import Followed, RemoteReplica, RoutePublisher
from stratus.deploy.metrics import DeployMetrics
from stratus.deploy.replicas import LocalPlacement
from stratus.deploy.router import LiveEndpoint, Replica, ReplicaClient, Routes, TargetRuntime
from stratus.deploy.service import EndpointService
from stratus.errors import Conflict
from stratus.registry import RegistryService
from stratus.security.encryption import Keyring
from stratus.store import ArtifactStore, Database
from stratus.store.tables import EndpointRoutes


@pytest.fixture
def world(postgres: PostgresServer, tmp_path: Path) -> Iterator[tuple[RegistryService, Keyring]]:
    name = postgres.create_database()
    keyring = Keyring.generate()
    db = Database(postgres.url(name))
    registry = RegistryService(db, ArtifactStore(tmp_path / "artifacts", keyring))
    yield registry, keyring
    db.dispose()
    postgres.drop_database(name)


def _open(project: str, name: str, routes: Routes, sticky: str | None) -> LiveEndpoint:
    from prometheus_client import CollectorRegistry

    return LiveEndpoint(project, name, routes, sticky, ReplicaClient(), DeployMetrics(CollectorRegistry()))


def test_published_routes_are_followed_with_sealed_tokens(world: tuple[RegistryService, Keyring]) -> None:
    registry, keyring = world
    v1 = registry.register_onnx("m", affine_model(scale=1.0))
    v2 = registry.register_onnx("m", affine_model(scale=2.0))
    one, two = TargetRuntime(v1, {}), TargetRuntime(v2, {})
    one.replicas = [Replica("r1", RemoteReplica("http://127.0.0.1:1001", "token-one"), state="ready")]
    two.replicas = [
        Replica("r2", RemoteReplica("http://127.0.0.1:1002", "token-two"), state="ready"),
        Replica("r3", RemoteReplica("http://127.0.0.1:1003", "token-three"), state="starting"),  # not routable yet
    ]
    live = _open("default", "ep", Routes([one, two], [0.9, 0.1]), "X-User")
    live.revision = 4
    endpoints = [live]
    publisher = RoutePublisher(registry.db, keyring, lambda: endpoints)
    assert publisher.publish() == 1
    assert publisher.publish() == 0  # unchanged: nothing written
    with registry.db.read() as s:
        stored = str(s.scalars(select(EndpointRoutes.table)).one())
    assert "token-one" not in stored and "http://127.0.0.1:1001" in stored

    follower = Followed(registry.db, keyring, lambda _p, model, v: registry.get_version(model, v), _open)
    follower.refresh()
    assert follower.names("default") == ["ep"] and follower.names("other") == []
    seen = follower.get("default", "ep")
    assert seen is not None and seen.revision == 4 and seen.sticky_header == "X-User"
    assert [t.version.version for t in seen.routes.targets] == [1, 2] and seen.routes.shares == [0.9, 0.1]
    first = seen.routes.targets[0].replicas[0]
    assert (first.process.url, first.process.token) == ("http://127.0.0.1:1001", "token-one")
    assert [r.id for r in seen.routes.targets[1].replicas] == ["r2"]

    # A replica the follower's router saw fail stays dead here, until the holder's table drops it.
    first.state = "dead"
    two.replicas[1].state = "ready"
    assert publisher.publish() == 1
    follower.refresh()
    again = follower.get("default", "ep")
    assert again is not None and again.routes.targets[0].replicas[0] is first and first.state == "dead"
    assert [r.id for r in again.routes.targets[1].replicas] == ["r2", "r3"]

    endpoints.clear()
    assert publisher.publish() == 1
    follower.refresh()
    assert follower.get("default", "ep") is None


def test_a_table_sealed_by_another_master_key_is_not_followed(world: tuple[RegistryService, Keyring]) -> None:
    registry, keyring = world
    target = TargetRuntime(registry.register_onnx("m", affine_model()), {})
    target.replicas = [Replica("r1", RemoteReplica("http://127.0.0.1:1001", "secret"), state="ready")]
    RoutePublisher(
        registry.db, Keyring.generate(), lambda: [_open("default", "ep", Routes([target], [1.0]), None)]
    ).publish()
    follower = Followed(registry.db, keyring, lambda _p, model, v: registry.get_version(model, v), _open)
    follower.refresh()  # logged and skipped: a server with the wrong key routes nothing rather than fail
    assert follower.get("default", "ep") is None


def _records(registry: RegistryService, url: str) -> tuple[EndpointService, Database]:
    """Endpoint records on another server of the same database, one that does not hold endpoint control (its
    changes are recorded; the holder would roll them out): no replica starts here."""
    from prometheus_client import CollectorRegistry

    db = Database(url)
    other = RegistryService(db, registry.artifacts)
    service = EndpointService(db, other)
    controller = Controller(LocalPlacement(), service, DeployMetrics(CollectorRegistry()), service.entries_for)
    controller.in_control = lambda: False
    service.attach(controller)
    return service, db


def test_endpoint_changes_race_safely_across_servers(world: tuple[RegistryService, Keyring]) -> None:
    registry, _ = world
    registry.register_onnx("m", affine_model())
    servers = [_records(registry, registry.db.url) for _ in range(4)]
    spec = {"targets": [{"model": "m", "version": "1"}]}
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def create(service: EndpointService) -> None:
        barrier.wait()
        try:
            service.create("ep", spec)
            outcomes.append("created")
        except Conflict:
            outcomes.append("conflict")

    def update(service: EndpointService) -> None:
        barrier.wait()
        service.update("ep", spec)

    try:
        for work in (create, update):
            threads = [threading.Thread(target=work, args=(service,)) for service, _ in servers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert sorted(outcomes) == ["conflict"] * 3 + ["created"]
        # Four updates at once on four servers: each its own revision number, none lost, no 500.
        assert [r["revision"] for r in servers[0][0].revisions("ep")] == [1, 2, 3, 4, 5]
    finally:
        for _, db in servers:
            db.dispose()
