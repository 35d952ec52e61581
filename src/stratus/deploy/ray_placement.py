"""Replicas as Ray actors (``--placement ray``), behind the same ``Placement`` interface as local processes.

Each replica is an actor (deploy/ray_replica.py) that asks for ``cpus`` and ``memory_mb``, placed with a soft
preference for the alive node holding the fewest replicas of its target (Ray's SPREAD when the cluster does not
say), so an endpoint's replicas land on different nodes, replacements included. Its process serves the replica
app on the node's address; the router reaches it there with its bearer token (the replica itself gets only its SHA-256,
inside the sealed bundle). A replica is alive while its actor's ``wait_exit`` call is pending: the call returns
when the process exits and fails when the actor, its worker or its node dies, and the supervisor then replaces it
like a dead local process.

Replicas belong to the cluster, not to the server that started them: they are detached actors named
``stratus-replica:<target key>:<id>``, the target key being a hash of the serving bundle (the same version's bundle
gives the same key on every server). So when the server holding endpoint control dies, its replicas go on
serving: the other servers keep routing to them (``discover``), and the next holder adopts them when it redeploys
(``start`` takes a live replica of the same target that no one holds here before it creates one) instead of
starting new ones. A replica is stopped only by the placement that holds it (``kill`` and ``stop`` of a
discovered or released replica do nothing).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import uuid
from collections import defaultdict
from concurrent.futures import Future
from typing import Any

import orjson

from stratus import framing, raycluster
from stratus.deploy.bundle import MANIFEST
from stratus.deploy.ray_replica import ReplicaActor
from stratus.deploy.replicas import REPLICA_CONFIG

log = logging.getLogger(__name__)

#: How long an actor may take to be placed and take its bundle; a cluster without room for it fails the start.
PLACE_TIMEOUT_S = 120.0
PREFIX = "stratus-replica:"


def target_key(entries: dict[str, bytes]) -> str:
    """A name for what a replica serves: the hash of its bundle's entries (names and bytes), the manifest without the
    moment it was built (each server builds the same target's bundle anew)."""
    digest = hashlib.sha256()
    for name in sorted(entries):
        data = _timeless(entries[name]) if name == MANIFEST else entries[name]
        digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:24]


def _timeless(manifest: bytes) -> bytes:
    try:
        parsed = orjson.loads(manifest)
    except orjson.JSONDecodeError:
        return manifest
    if isinstance(parsed, dict):
        parsed.pop("created_at", None)
    return orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)


class RayReplica:
    def __init__(self, actor: Any, name: str, info: dict[str, Any] | None, exited: Future[Any] | None) -> None:
        self._actor = actor
        self.name = name
        self._info = info or {}
        self._exited = exited
        #: Whether this server may stop it: a replica it started or adopted, not one it only routes to.
        self.owned = True

    @property
    def url(self) -> str:
        return str(self._info.get("url", "http://127.0.0.1:9"))

    @property
    def token(self) -> str:
        return str(self._info.get("token", ""))

    @property
    def pid(self) -> int:
        """The actor's worker process on its node (killing it ends the replica)."""
        return int(self._info.get("worker_pid", 0))

    @property
    def node(self) -> str:
        """The Ray node the replica runs on."""
        return str(self._info.get("node", ""))

    def alive(self) -> bool:
        return self._exited is not None and not self._exited.done()

    def stop(self, grace_s: float = 2.0) -> None:
        import ray

        if not self.owned:
            return
        if self.alive():
            try:
                ray.get(self._actor.stop.remote(grace_s), timeout=grace_s + 5)
            except Exception as exc:  # its actor is gone already, or stuck: it is killed below either way
                log.debug("replica actor stop: %s", exc)
        self.kill()

    def kill(self) -> None:
        import ray

        if not self.owned:
            return
        try:
            ray.kill(self._actor, no_restart=True)
        except Exception as exc:  # already dead
            log.debug("replica actor kill: %s", exc)


class RayPlacement:
    def __init__(self, address: str, threads: int = 1, cpus: float = 0, memory_mb: int = 0) -> None:
        import ray

        raycluster.connect(address)
        self.threads = threads
        self._actor_class = ray.remote(ReplicaActor)
        self._options: dict[str, Any] = {
            "lifetime": "detached",  # it outlives this server; see the module's docstring
            "max_restarts": 0,  # the supervisor replaces a dead replica, with a new token
            "max_concurrency": 16,  # each server that routes to it blocks one thread in wait_exit
            "scheduling_strategy": "SPREAD",
            **raycluster.resources(cpus or float(threads), memory_mb),
        }
        self._lock = threading.Lock()
        self._held: dict[str, RayReplica] = {}  # by actor name: what this placement started or adopted
        self._seen: dict[str, RayReplica] = {}  # by actor name: replicas found by discover()
        self._placing: defaultdict[str, list[str]] = defaultdict(list)  # by target key: nodes of replicas starting
        self._closed = False

    def start(self, entries: dict[str, bytes]) -> RayReplica:
        if self._closed:
            raise RuntimeError("the replica placement is closed")
        key = target_key(entries)
        adopted = self._adopt(key)
        if adopted is not None:
            return adopted
        return self._create(key, entries)

    def _create(self, key: str, entries: dict[str, bytes]) -> RayReplica:
        import ray

        token = secrets.token_urlsafe(24)
        config = {"token_sha256": hashlib.sha256(token.encode()).hexdigest(), "threads": self.threads}
        sealed_key, sealed = raycluster.seal(framing.pack({**entries, REPLICA_CONFIG: orjson.dumps(config)}))
        name = f"{PREFIX}{key}:{uuid.uuid4().hex[:12]}"
        node, preference = self._spread_from(key)
        try:
            options = {**self._options, **preference, "name": name}
            actor: Any = self._actor_class.options(**options).remote(self.threads)
            try:
                served: Any = ray.get(actor.serve.remote(sealed_key, sealed, token), timeout=PLACE_TIMEOUT_S)
                info = dict(served)
            except Exception as exc:  # not placed in time, or died starting: a replica that never becomes ready
                log.warning("a replica actor did not start: %s", exc)
                replica = RayReplica(actor, name, None, None)
                replica.kill()
                return replica
        finally:
            if node:
                with self._lock:
                    self._placing[key].remove(node)
        replica = RayReplica(actor, name, info, actor.wait_exit.remote().future())
        with self._lock:
            self._held[name] = replica
        return replica

    def _spread_from(self, key: str) -> tuple[str, dict[str, Any]]:
        """Where the next replica of ``key`` should go: the alive node with the fewest of its replicas, live or being
        placed (a soft preference; the node is noted as being placed on until ``_create`` is done). SPREAD alone
        round-robins over nodes without looking at where the target's replicas are, so a replacement could join
        the surviving replica on its node and leave the endpoint on one node."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        try:
            listed: Any = ray.nodes()  # type: ignore[no-untyped-call]
            alive = sorted(str(n["NodeID"]) for n in listed if n.get("Alive"))
        except Exception as exc:  # the cluster did not answer: Ray's own spreading then
            log.debug("ray.nodes(): %s", exc)
            return "", {}
        if not alive:
            return "", {}
        with self._lock:
            taken = [r.node for n, r in self._held.items() if n.startswith(f"{PREFIX}{key}:") and r.alive()]
            taken += self._placing[key]
            emptiest = min(alive, key=taken.count)
            self._placing[key].append(emptiest)
        return emptiest, {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=emptiest, soft=True)}

    def _adopt(self, key: str) -> RayReplica | None:
        """A live replica of this target that this placement does not hold (left by a server that died)."""
        for replica in self._find(key):
            with self._lock:
                if replica.name in self._held:
                    continue
                replica.owned = True
                self._held[replica.name] = replica
                self._seen.pop(replica.name, None)
            log.info("adopted replica %s at %s", replica.name, replica.url)
            return replica
        return None

    def discover(self, entries: dict[str, bytes]) -> list[RayReplica]:
        """Every live replica of this target in the cluster, whoever started it (for a server that routes to an
        endpoint another server controls). This placement never stops a replica it only discovered."""
        return self._find(target_key(entries), include_held=True)

    def _find(self, key: str, include_held: bool = False) -> list[RayReplica]:
        import ray

        found: list[RayReplica] = []
        for name in sorted(n for n in _named_actors() if n.startswith(f"{PREFIX}{key}:")):
            with self._lock:
                known = self._held.get(name) or self._seen.get(name)
            if known is None:
                try:
                    actor = ray.get_actor(name)
                    described: Any = ray.get(actor.describe.remote(), timeout=30)
                    info = dict(described)
                except Exception as exc:  # it died meanwhile
                    log.debug("replica %s: %s", name, exc)
                    continue
                if info.get("exited") or not info.get("token"):
                    continue
                known = RayReplica(actor, name, info, actor.wait_exit.remote().future())
                known.owned = False
                with self._lock:
                    self._seen[name] = known
            if known.alive() and (include_held or name not in self._held):
                found.append(known)
        with self._lock:  # forget what died
            self._seen = {n: r for n, r in self._seen.items() if r.alive()}
            self._held = {n: r for n, r in self._held.items() if r.alive()}
        return found

    def release_all(self) -> None:
        """Stop holding every replica without stopping it (this server lost endpoint control: the next holder
        adopts them)."""
        with self._lock:
            held = list(self._held.values())
            self._held = {}
        for replica in held:
            replica.owned = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            held = list(self._held.values())
            self._held = {}
        for replica in held:
            replica.kill()


def _named_actors() -> list[str]:
    import ray

    names = ray.util.list_named_actors()
    return [str(n) for n in names]


__all__ = ["RayPlacement", "RayReplica", "target_key"]
