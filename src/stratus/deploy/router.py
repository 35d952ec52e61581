"""Request routing for endpoints: pick a target by traffic weight (or a sticky header), then a replica by
least outstanding requests, call it over V2 binary, and retry once on another replica when the chosen one
dies mid-request (inference is idempotent). Shadow targets get a copy of each request in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

from stratus import errors, protocol, tenancy
from stratus.deploy.http1 import ConnectionFailed, ReplicaConnections
from stratus.deploy.metrics import DeployMetrics
from stratus.deploy.replicas import ReplicaProcess
from stratus.registry.records import VersionInfo
from stratus.types import Tensor

log = logging.getLogger(__name__)

#: How long a request waits for a replica when its target has none ready (scale from zero, restarts).
REPLICA_WAIT_S = 30.0
#: Longest a replica may take to answer one request before it counts as gone.
REQUEST_TIMEOUT_S = 60.0


#: Failures that are the caller's (bad input), not the version's: a canary is not judged on them.
_CALLER_ERRORS = (errors.InvalidInput, errors.NotFound, errors.PayloadTooLarge)


class ReplicaGone(Exception):
    """The replica's connection failed or dropped: the request may be retried elsewhere."""


@dataclass(eq=False)
class Replica:
    id: str
    process: ReplicaProcess
    state: str = "starting"  # starting -> ready -> draining -> stopped; or dead
    outstanding: int = 0
    health_failures: int = 0
    started_at: float = field(default_factory=time.monotonic)
    ready_at: float | None = None
    #: Set when the last request of a draining replica ends (the replica set waits on it to stop it).
    drained: threading.Event = field(default_factory=threading.Event)

    def to_dict(self) -> dict[str, object]:
        shown: dict[str, object] = {
            "id": self.id,
            "pid": self.process.pid,
            "url": self.process.url,
            "state": self.state,
            "outstanding": self.outstanding,
            "start_seconds": round(self.ready_at - self.started_at, 3) if self.ready_at else None,
        }
        node = getattr(self.process, "node", None)  # a Ray placement's replicas name their node
        if node:
            shown["node"] = node
        return shown


class TargetRuntime:
    """The replicas of one version within one endpoint, with the load and outcome figures that the
    autoscaler and the canary judge read."""

    def __init__(self, version: VersionInfo, entries: dict[str, bytes]) -> None:
        self.version = version
        self.entries = entries
        self.replicas: list[Replica] = []
        self.demand: Callable[[], None] = lambda: None  # set by the controller: start a replica now
        self.waiting = 0
        self.pending_starts = 0  # replica starts asked for whose process is not in ``replicas`` yet
        self.outcomes: deque[tuple[float, bool, float]] = deque(maxlen=20_000)
        self.last_request = time.monotonic()
        # Requests waiting for a ready replica, each on its event loop: woken by ``replica_ready`` (from the
        # replica set's thread) instead of polling.
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._waiters_lock = threading.Lock()

    @property
    def label(self) -> str:
        return f"{self.version.model}:{self.version.version}"

    def ready(self) -> list[Replica]:
        return [r for r in self.replicas if r.state == "ready"]

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.state in ("starting", "ready")]

    def in_flight(self) -> int:
        return sum(r.outstanding for r in self.replicas) + self.waiting

    def replica_ready(self) -> None:
        """A replica of this target became ready (called from any thread): wake the requests waiting."""
        with self._waiters_lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    @contextmanager
    def watch(self) -> Iterator[asyncio.Event]:
        """An event of the running loop that ``replica_ready`` sets, for as long as the block runs."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._waiters_lock:
            self._waiters.add(entry)
        try:
            yield entry[1]
        finally:
            with self._waiters_lock:
                self._waiters.discard(entry)

    def record(self, ok: bool, seconds: float) -> None:
        self.outcomes.append((time.monotonic(), ok, seconds))

    def window(self, since: float) -> tuple[int, int, float]:
        """Requests, failures and p99 seconds since ``since`` (monotonic)."""
        recent = [o for o in self.outcomes if o[0] >= since]
        if not recent:
            return 0, 0, 0.0
        latencies = sorted(o[2] for o in recent)
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        return len(recent), sum(1 for o in recent if not o[1]), p99


def pick_weighted(shares: list[float], key: str | None = None) -> int:
    """Index of the chosen share. With a key the choice is a stable function of it (sticky routing);
    without, random in proportion to the shares."""
    total = sum(shares)
    if key is not None:
        point = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64 * total
    else:
        point = random.random() * total
    for index, share in enumerate(shares):
        point -= share
        if point < 0:
            return index
    return max(range(len(shares)), key=lambda i: shares[i])


def least_outstanding(replicas: list[Replica]) -> Replica:
    """Power of two choices on outstanding requests: near-best balance without a global scan."""
    if len(replicas) == 1:
        return replicas[0]
    a, b = random.sample(replicas, 2)
    return a if a.outstanding <= b.outstanding else b


class ReplicaClient:
    """Keep-alive connections to each replica, per event loop (streams cannot be shared across loops)."""

    def __init__(self) -> None:
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ReplicaConnections]] = (
            weakref.WeakKeyDictionary()
        )

    def _connections(self, url: str) -> ReplicaConnections:
        loop = asyncio.get_running_loop()
        pools = self._pools.get(loop)
        if pools is None:
            pools = self._pools[loop] = {}
        connections = pools.get(url)
        if connections is None:
            parts = urlsplit(url)
            connections = pools[url] = ReplicaConnections(parts.hostname or "127.0.0.1", parts.port or 80)
        return connections

    async def infer(
        self,
        replica: Replica,
        version: VersionInfo,
        inputs: dict[str, Tensor],
        outputs: list[str] | None,
        timeout_ms: float | None = None,
    ) -> dict[str, Tensor]:
        # Every input and output travels as raw little-endian bytes after a small JSON header.
        body, header_length = protocol.encode_infer_request(inputs, outputs=outputs, timeout_ms=timeout_ms)
        path = f"/v2/models/{version.model}/versions/{version.version}/infer"
        headers = {
            protocol.HEADER_LENGTH_HEADER: str(header_length),
            "Content-Type": protocol.BINARY_CONTENT_TYPE,
            "Authorization": f"Bearer {replica.process.token}",
        }
        try:
            response = await self._connections(replica.process.url).post(path, headers, body, REQUEST_TIMEOUT_S)
        except ConnectionFailed as exc:
            raise ReplicaGone(str(exc)) from None
        if response.status != 200:
            raise _error_of(response.status, response.body, response.headers.get(protocol.KIND_HEADER.lower()))
        length = protocol.parse_header_length(response.headers.get(protocol.HEADER_LENGTH_HEADER.lower()))
        return protocol.decode_infer_response(response.body, length).outputs


def _error_of(status: int, body: bytes, kind: str | None) -> errors.StratusError:
    try:
        message = str(orjson.loads(body).get("error", ""))
    except (orjson.JSONDecodeError, AttributeError):
        message = ""
    return protocol.error_for_status(status, message or f"a replica answered HTTP {status}", kind)


@dataclass
class Routes:
    """An endpoint's routing table; replaced as a whole, never edited in place."""

    targets: list[TargetRuntime]
    shares: list[float]
    shadows: list[TargetRuntime] = field(default_factory=list)


class LiveEndpoint:
    """An endpoint as the data plane sees it (stratus.dataplane.RoutedEndpoint)."""

    def __init__(
        self,
        project: str,
        name: str,
        routes: Routes,
        sticky_header: str | None,
        client: ReplicaClient,
        metrics: DeployMetrics,
    ) -> None:
        self.project, self.name = project, name
        self.routes = routes
        self.sticky_header = sticky_header
        self.revision = 0
        self._client = client
        self._metrics = metrics
        self._background: set[asyncio.Task[None]] = set()

    def versions(self) -> list[VersionInfo]:
        routes = self.routes
        order = sorted(range(len(routes.targets)), key=lambda i: -routes.shares[i])
        return [routes.targets[i].version for i in order if routes.shares[i] > 0] or [routes.targets[0].version]

    def ready(self) -> bool:
        # A target scaled to zero counts as ready: its first request waits for a replica, it does not fail.
        routed = [t for t, share in zip(self.routes.targets, self.routes.shares, strict=True) if share > 0]
        return all(t.ready() or not t.live() for t in routed)

    def _choose(self) -> TargetRuntime:
        routes = self.routes
        key = tenancy.request_headers().get(self.sticky_header) if self.sticky_header else None
        return routes.targets[pick_weighted(routes.shares, key)]

    async def infer(
        self, inputs: dict[str, Tensor], outputs: list[str] | None, timeout_ms: float | None
    ) -> tuple[VersionInfo, dict[str, Tensor]]:
        target = self._choose()
        for shadow in self.routes.shadows:
            task = asyncio.create_task(self._shadow(shadow, inputs, outputs))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        started = time.perf_counter()
        try:
            result = await self.call(target, inputs, outputs, timeout_ms)
        except errors.StratusError as exc:
            target.record(isinstance(exc, _CALLER_ERRORS), time.perf_counter() - started)
            raise
        target.record(True, time.perf_counter() - started)
        return target.version, result

    async def _shadow(self, target: TargetRuntime, inputs: dict[str, Tensor], outputs: list[str] | None) -> None:
        started = time.perf_counter()
        try:
            await self.call(target, inputs, outputs)
        except Exception as exc:  # a shadow's failure is counted, never returned to the caller
            self._metrics.shadow((self.project, self.name), target.label, "failure")
            target.record(False, time.perf_counter() - started)
            log.debug("shadow %s of endpoint %s failed: %s", target.label, self.name, exc)
            return
        self._metrics.shadow((self.project, self.name), target.label, "success")
        target.record(True, time.perf_counter() - started)

    async def _replica(self, target: TargetRuntime, avoid: Replica | None) -> Replica:
        ready = [r for r in target.ready() if r is not avoid]
        if ready:
            return least_outstanding(ready)
        target.demand()
        target.waiting += 1
        try:
            deadline = time.monotonic() + REPLICA_WAIT_S
            # Watching before looking: a replica that gets ready between the look and the wait still wakes us.
            with target.watch() as changed:
                while (remaining := deadline - time.monotonic()) > 0:
                    changed.clear()
                    ready = [r for r in target.ready() if r is not avoid]
                    if ready:
                        return least_outstanding(ready)
                    # Woken by the replica set; the 1 s cap only bounds a wake-up that never comes.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), min(remaining, 1.0))
        finally:
            target.waiting -= 1
        raise errors.NotReady(
            f"endpoint {self.name!r}: no replica of {target.label} became ready in {REPLICA_WAIT_S:.0f} s"
        )

    async def call(
        self,
        target: TargetRuntime,
        inputs: dict[str, Tensor],
        outputs: list[str] | None,
        timeout_ms: float | None = None,
    ) -> dict[str, Tensor]:
        target.last_request = time.monotonic()
        replica = await self._replica(target, None)
        for attempt in (1, 2):
            replica.outstanding += 1
            try:
                return await self._client.infer(replica, target.version, inputs, outputs, timeout_ms)
            except ReplicaGone as exc:
                if replica.state == "ready":
                    replica.state = "dead"  # the supervisor replaces it
                if attempt == 2:
                    raise errors.NotReady(f"endpoint {self.name!r}: replicas of {target.label} failed: {exc}") from None
                self._metrics.retried((self.project, self.name))
                log.warning("replica %s of %s failed mid-request (%s); retrying once", replica.id, target.label, exc)
            finally:
                replica.outstanding -= 1
                if replica.outstanding == 0 and replica.state == "draining":
                    replica.drained.set()
            replica = await self._replica(target, replica)
        raise AssertionError("unreachable")
