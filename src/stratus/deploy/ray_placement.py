"""Replicas as Ray actors (``--placement ray``), behind the same ``Placement`` interface as local processes.

Each replica is an actor (deploy/ray_replica.py) that asks for ``cpus`` and ``memory_mb``, placed with Ray's
SPREAD strategy so an endpoint's replicas land on different nodes. Its process serves the replica app on the
node's address; the router reaches it there with its bearer token, which never leaves this server (the replica
gets only its SHA-256, inside the sealed bundle). A replica is alive while its actor's ``wait_exit`` call is
pending: the call returns when the process exits and fails when the actor, its worker or its node dies, and the
supervisor then replaces it like a dead local process. The actors are owned by this server: when it dies, Ray
ends them, as local replicas die with their server.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import uuid
from concurrent.futures import Future
from typing import Any

import orjson

from stratus import framing, raycluster
from stratus.deploy.ray_replica import ReplicaActor
from stratus.deploy.replicas import REPLICA_CONFIG

log = logging.getLogger(__name__)

#: How long an actor may take to be placed and take its bundle; a cluster without room for it fails the start.
PLACE_TIMEOUT_S = 120.0


class RayReplica:
    def __init__(self, actor: Any, token: str, info: dict[str, Any] | None, exited: Future[Any] | None) -> None:
        self._actor = actor
        self._token = token
        self._info = info or {}
        self._exited = exited

    @property
    def url(self) -> str:
        return str(self._info.get("url", "http://127.0.0.1:9"))

    @property
    def token(self) -> str:
        return self._token

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

        if self.alive():
            try:
                ray.get(self._actor.stop.remote(grace_s), timeout=grace_s + 5)
            except Exception as exc:  # its actor is gone already, or stuck: it is killed below either way
                log.debug("replica actor stop: %s", exc)
        self.kill()

    def kill(self) -> None:
        import ray

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
            "max_restarts": 0,  # the supervisor replaces a dead replica, with a new token
            "max_concurrency": 4,  # wait_exit blocks while serve and stop come
            "scheduling_strategy": "SPREAD",
            **raycluster.resources(cpus or float(threads), memory_mb),
        }
        self._lock = threading.Lock()
        self._actors: list[RayReplica] = []
        self._closed = False

    def start(self, entries: dict[str, bytes]) -> RayReplica:
        import ray

        if self._closed:
            raise RuntimeError("the replica placement is closed")
        token = secrets.token_urlsafe(24)
        config = {"token_sha256": hashlib.sha256(token.encode()).hexdigest(), "threads": self.threads}
        key, sealed = raycluster.seal(framing.pack({**entries, REPLICA_CONFIG: orjson.dumps(config)}))
        actor: Any = self._actor_class.options(**self._options, name=f"stratus-replica-{uuid.uuid4().hex[:12]}").remote(self.threads)
        try:
            info: dict[str, Any] = ray.get(actor.serve.remote(key, sealed), timeout=PLACE_TIMEOUT_S)
        except Exception as exc:  # not placed in time, or died starting: a replica that never becomes ready
            log.warning("a replica actor did not start: %s", exc)
            replica = RayReplica(actor, token, None, None)
            replica.kill()
            return replica
        replica = RayReplica(actor, token, info, actor.wait_exit.remote().future())
        with self._lock:
            self._actors = [a for a in self._actors if a.alive()] + [replica]
        return replica

    def close(self) -> None:
        with self._lock:
            self._closed = True
            actors, self._actors = self._actors, []
        for replica in actors:
            replica.kill()


__all__ = ["RayPlacement", "RayReplica"]
