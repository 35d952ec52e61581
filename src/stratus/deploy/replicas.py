"""Replica processes on this machine.

A replica is a single-endpoint Stratus server (``python -m stratus.cli.endpoint_server``) serving one
version from a bundle it reads on stdin, on a socket the parent bound on loopback. ``LocalPlacement``
keeps one spare process started ahead, its imports done and waiting for its bundle, so a new replica is
ready in the time it takes to load the model rather than to start Python. The interface is small
(``start`` a bundle, get a ``ReplicaProcess``) so that another placement (a Ray cluster) can take its place.

Replicas die with their server, however it dies: each starts through ``stratus.lifeline``, which before any
heavy import sets a parent-death signal and watches a pipe only the server holds (see lifeline.py). The
signal follows the thread that forked, so every replica is forked by one ``Spawner`` thread that lives as
long as the server process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import httpx
import orjson

from stratus import framing

log = logging.getLogger(__name__)

REPLICA_CONFIG = "replica.json"
REPLICA_MODULE = "stratus.cli.endpoint_server"

T = TypeVar("T")


class Spawner:
    """One daemon thread, alive as long as the process, that runs every replica's fork. A replica's
    parent-death signal fires when the thread that forked it ends; the threads that want replicas (rollouts,
    the autoscaler, spare refills) come and go, so they hand the fork to this one."""

    _instance: Spawner | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="stratus-spawner", daemon=True)
        self.thread.start()

    @classmethod
    def shared(cls) -> Spawner:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _run(self) -> None:
        while True:
            job, future = self._jobs.get()
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the caller, who re-raises it
                future.set_exception(exc)

    def call(self, job: Callable[[], T]) -> T:
        if threading.current_thread() is self.thread:
            return job()
        future: Future[object] = Future()
        self._jobs.put((job, future))
        return future.result()  # type: ignore[return-value]


class ReplicaProcess(Protocol):
    @property
    def url(self) -> str: ...
    @property
    def token(self) -> str: ...
    @property
    def pid(self) -> int: ...

    def alive(self) -> bool: ...
    def stop(self, grace_s: float = 2.0) -> None: ...
    def kill(self) -> None: ...


class Placement(Protocol):
    def start(self, entries: dict[str, bytes]) -> ReplicaProcess: ...
    def close(self) -> None: ...


@dataclass
class LocalProcess:
    process: subprocess.Popen[bytes]
    port: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def _close_stdin(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()

    def stop(self, grace_s: float = 2.0) -> None:
        self._close_stdin()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def kill(self) -> None:
        self._close_stdin()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


class LocalPlacement:
    """Replica processes on this machine, each with ``threads`` ONNX Runtime threads."""

    def __init__(self, threads: int = 1, spares: int = 1) -> None:
        self.threads = threads
        self._spares_wanted = spares
        self._spares: list[LocalProcess] = []
        self._lock = threading.Lock()
        self._closed = False
        self._spawner = Spawner.shared()
        # The lifeline: replicas get the read end; the write end stays in this process only (os.pipe's ends
        # are not inherited by other children), so it closes exactly when this process dies or close() runs.
        self._lifeline_read, self._lifeline_write = os.pipe()

    def _spawn(self) -> LocalProcess:
        return self._spawner.call(self._spawn_here)

    def _spawn_here(self) -> LocalProcess:
        if self._closed:  # its lifeline is closed (and the descriptor number may be reused)
            raise RuntimeError("the replica placement is closed")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        port = listener.getsockname()[1]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(self.threads)}
        lifeline = ["-m", "stratus.lifeline", str(os.getpid()), str(self._lifeline_read)]
        try:
            process = subprocess.Popen(
                [sys.executable, *lifeline, REPLICA_MODULE, "--stdin", "--fd", str(listener.fileno())],
                stdin=subprocess.PIPE,
                pass_fds=(listener.fileno(), self._lifeline_read),
                env=env,
            )
        finally:
            listener.close()  # the child holds its own copy
        return LocalProcess(process, port)

    def _refill(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._spares = [s for s in self._spares if s.alive()]
            while len(self._spares) < self._spares_wanted:
                self._spares.append(self._spawn())

    def start(self, entries: dict[str, bytes]) -> LocalProcess:
        with self._lock:
            spare = next((s for s in self._spares if s.alive()), None)
            if spare is not None:
                self._spares.remove(spare)
        replica = spare or self._spawn()
        config = {"token_sha256": hashlib.sha256(replica.token.encode()).hexdigest(), "threads": self.threads}
        payload = framing.pack({**entries, REPLICA_CONFIG: orjson.dumps(config)})
        assert replica.process.stdin is not None
        try:
            replica.process.stdin.write(payload)
            replica.process.stdin.close()
        except BrokenPipeError:
            log.warning("a replica process exited before it got its model")
        threading.Thread(target=self._refill, name="stratus-spare", daemon=True).start()
        return replica

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            spares, self._spares = self._spares, []
        for spare in spares:
            spare.kill()
        # Any replica still running exits now (the controller has stopped its replicas before this).
        for fd in (self._lifeline_write, self._lifeline_read):
            with contextlib.suppress(OSError):
                os.close(fd)


def wait_ready(replica: ReplicaProcess, timeout_s: float, client: httpx.Client) -> bool:
    """Poll the replica's readiness until it answers 200, exits, or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not replica.alive():
            return False
        if check_health(replica, client, timeout_s=0.5):
            return True
        time.sleep(0.01)
    return False


def check_health(replica: ReplicaProcess, client: httpx.Client, timeout_s: float = 1.0) -> bool:
    try:
        response = client.get(f"{replica.url}/v2/health/ready", timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code == 200
