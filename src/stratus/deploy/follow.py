"""Endpoints on the servers that do not control them: the holder publishes each endpoint's routing table (its
targets, traffic shares and ready replicas with their tokens, sealed by the master key every server shares) to the
``endpoint_routes`` table; the other servers read it at every lease round and route requests to the same replicas
with the same router (least outstanding, one retry on another replica). They never start, stop or replace a replica:
a replica that fails a request is marked dead here, and the holder's supervisor replaces it in the next table.

Replicas must be reachable from every server for this to serve: Ray actors on the cluster's nodes are; local
processes of the holder only from its own machine.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select

from stratus import tenancy
from stratus.deploy.router import LiveEndpoint, Replica, Routes, TargetRuntime
from stratus.registry.records import VersionInfo
from stratus.security.encryption import Keyring
from stratus.store import Database
from stratus.store.tables import EndpointRoutes, utcnow

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (project, endpoint name)
#: Builds the data plane's endpoint over given routes (the controller's router client and metrics).
OpenEndpoint = Callable[[str, str, Routes, str | None], LiveEndpoint]
#: A version of a project's model, from the registry.
GetVersion = Callable[[str, str, int], VersionInfo]


class RemoteReplica:
    """A replica another server started: reachable with its URL and token, not this server's to stop."""

    def __init__(self, url: str, token: str) -> None:
        self._url, self._token = url, token

    @property
    def url(self) -> str:
        return self._url

    @property
    def token(self) -> str:
        return self._token

    @property
    def pid(self) -> int:
        return 0

    def alive(self) -> bool:
        return True

    def stop(self, grace_s: float = 2.0) -> None:
        pass

    def kill(self) -> None:
        pass


def _aad(key: Key, replica_id: str) -> str:
    return f"endpoint-replica:{key[0]}/{key[1]}/{replica_id}"


def _target_table(target: TargetRuntime, key: Key, keyring: Keyring, share: float) -> dict[str, Any]:
    return {
        "model": target.version.model,
        "version": target.version.version,
        "share": share,
        "replicas": [
            {
                "id": r.id,
                "url": r.process.url,
                "token": base64.b64encode(keyring.wrap(r.process.token.encode(), _aad(key, r.id))).decode(),
            }
            for r in target.ready()
        ],
    }


def routing_table(live: LiveEndpoint, keyring: Keyring) -> dict[str, Any]:
    """What the holder publishes of one endpoint."""
    key = (live.project, live.name)
    routes = live.routes
    return {
        "revision": live.revision,
        "sticky_header": live.sticky_header,
        "targets": [_target_table(t, key, keyring, s) for t, s in zip(routes.targets, routes.shares, strict=True)],
        "shadows": [_target_table(t, key, keyring, 0.0) for t in routes.shadows],
    }


def _public(table: dict[str, Any]) -> object:
    """A table without its sealed tokens (sealing is randomised): what tells whether the routes changed."""

    def shown(target: dict[str, Any]) -> object:
        return (target["model"], target["version"], target["share"], [(r["id"], r["url"]) for r in target["replicas"]])

    return [
        table["revision"],
        table["sticky_header"],
        [shown(t) for t in table["targets"]],
        [shown(t) for t in table["shadows"]],
    ]


class RoutePublisher:
    """On the holder: write each live endpoint's routing table when it changed, drop those of removed endpoints."""

    def __init__(self, db: Database, keyring: Keyring, live: Callable[[], list[LiveEndpoint]]) -> None:
        self.db, self.keyring, self._live = db, keyring, live
        self._published: dict[Key, object] = {}

    def publish(self) -> int:
        tables = {(e.project, e.name): routing_table(e, self.keyring) for e in self._live()}
        changed = {k: t for k, t in tables.items() if self._published.get(k) != _public(t)}
        with self.db.write() as s:
            rows = {(r.project, r.name): r for r in s.scalars(select(EndpointRoutes)).all()}
            for key, table in changed.items():
                row = rows.get(key)
                if row is None:
                    s.add(EndpointRoutes(project=key[0], name=key[1], table=table))
                else:
                    row.table, row.updated_at = table, utcnow()
            gone = [k for k in rows if k not in tables]
            for project, name in gone:
                s.execute(delete(EndpointRoutes).where(EndpointRoutes.project == project, EndpointRoutes.name == name))
        self._published = {k: _public(t) for k, t in tables.items()}
        return len(changed) + len(gone)

    def forget(self) -> None:
        """Lost control: publish everything again when it comes back."""
        self._published = {}


class Followed:
    """On the other servers: the endpoints as the holder published them, rebuilt when their table changed. Targets and
    replicas keep their identity across refreshes, so outstanding counts, dead marks and waiting requests carry over."""

    def __init__(self, db: Database, keyring: Keyring, get_version: GetVersion, open_endpoint: OpenEndpoint) -> None:
        self.db, self.keyring = db, keyring
        self._get_version, self._open = get_version, open_endpoint
        self._endpoints: dict[Key, LiveEndpoint] = {}
        self._seen: dict[Key, object] = {}
        self._targets: dict[tuple[str, str, str, int], TargetRuntime] = {}
        self._lock = threading.Lock()

    def get(self, project: str, name: str) -> LiveEndpoint | None:
        return self._endpoints.get((project, name))

    def names(self, project: str) -> list[str]:
        return sorted(name for p, name in list(self._endpoints) if p == project)

    def clear(self) -> None:
        with self._lock:
            self._endpoints, self._seen, self._targets = {}, {}, {}

    def drop(self, keys: set[Key]) -> None:
        """Stop following these endpoints (this server, now in control, serves them itself)."""
        with self._lock:
            self._endpoints = {k: e for k, e in self._endpoints.items() if k not in keys}

    def __bool__(self) -> bool:
        return bool(self._endpoints)

    def refresh(self) -> None:
        with self.db.read() as s:
            tables = {(r.project, r.name): dict(r.table) for r in s.scalars(select(EndpointRoutes)).all()}
        with self._lock:
            endpoints = {k: e for k, e in self._endpoints.items() if k in tables}
            for key, table in tables.items():
                public = _public(table)
                if self._seen.get(key) == public and key in endpoints:
                    continue
                try:
                    endpoints[key] = self._build(key, table)
                except Exception:  # a version gone meanwhile, a table sealed by another master key: skip it
                    log.exception("cannot follow endpoint %s/%s", *key)
                    continue
                self._seen[key] = public
            self._endpoints = endpoints
            live_targets = {
                (k[0], k[1], t.version.model, t.version.version)
                for k, e in endpoints.items()
                for t in [*e.routes.targets, *e.routes.shadows]
            }
            self._targets = {k: t for k, t in self._targets.items() if k in live_targets}

    def _build(self, key: Key, table: dict[str, Any]) -> LiveEndpoint:
        project, name = key

        def target(entry: dict[str, Any]) -> TargetRuntime:
            ident = (project, name, str(entry["model"]), int(entry["version"]))
            runtime = self._targets.get(ident)
            if runtime is None:
                with tenancy.acting_as(tenancy.Caller(project=project)):
                    version = self._get_version(project, ident[2], ident[3])
                runtime = self._targets[ident] = TargetRuntime(version, {})
            known = {r.id: r for r in runtime.replicas}
            replicas = []
            for published in entry["replicas"]:
                replica = known.get(published["id"])
                if replica is None:
                    token = self.keyring.unwrap(base64.b64decode(published["token"]), _aad(key, published["id"]))
                    replica = Replica(published["id"], RemoteReplica(published["url"], token.decode()), state="ready")
                replicas.append(replica)
            runtime.replicas = replicas
            runtime.replica_ready()  # requests waiting for a replica look again
            return runtime

        targets = [target(t) for t in table["targets"]]
        routes = Routes(targets, [float(t["share"]) for t in table["targets"]], [target(t) for t in table["shadows"]])
        endpoint = self._open(project, name, routes, table.get("sticky_header"))
        endpoint.revision = int(table["revision"])
        return endpoint
