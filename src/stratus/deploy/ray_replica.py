"""What a replica's Ray actor runs on its node: the usual replica process, started and watched from the actor.

The actor binds a socket on its node's address (127.0.0.1 when the whole cluster runs on one host), starts the
single-endpoint server on it (``python -m stratus.lifeline ... stratus.cli.endpoint_server --stdin --fd N``, as
LocalPlacement does), and hands it the serving bundle on stdin; the bundle crosses Ray sealed (raycluster.seal).
The process is tied to the actor's worker by its lifeline: when Ray kills the worker (``ray.kill``, the actor's
owner died, the node was lost) or someone kills it with SIGKILL, the replica process goes too. ``wait_exit``
returns when the process ends, and fails when the actor dies, which is how the server learns either.

Imports only the standard library and stratus leaves at module level: Ray imports it by name on its workers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from typing import Any

from stratus.raycluster import unseal

REPLICA_MODULE = "stratus.cli.endpoint_server"


class ReplicaActor:
    def __init__(self, threads: int, host: str | None = None) -> None:
        import ray

        self._host = host or str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
        self._node = ray.get_runtime_context().get_node_id()
        self._token = ""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self._host, 0))
        listener.listen(512)
        self._port = listener.getsockname()[1]
        self._lifeline_read, self._lifeline_write = os.pipe()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
        lifeline = ["-m", "stratus.lifeline", str(os.getpid()), str(self._lifeline_read)]
        try:
            # Started now, before its model comes: its imports overlap the server's sealing and sending.
            self._process = subprocess.Popen(
                [sys.executable, *lifeline, REPLICA_MODULE, "--stdin", "--fd", str(listener.fileno())],
                stdin=subprocess.PIPE,
                pass_fds=(listener.fileno(), self._lifeline_read),
                env=env,
            )
        finally:
            listener.close()
            os.close(self._lifeline_read)
        # Ray starts its workers at niceness 15 (RAY_worker_niceness) and the replica would inherit it: serving
        # then yields the CPU to everything else on the node. Back to normal where allowed (root, CAP_SYS_NICE);
        # elsewhere set RAY_worker_niceness=0 on the serving nodes (docs/scale-out.md).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self._process.pid, 0)

    def serve(self, key: bytes, sealed_bundle: bytes, token: str) -> dict[str, Any]:
        """Hand the replica its bundle; returns where it serves. The actor keeps the token for other servers of the
        same cluster (``describe``): a replica outlives the server that started it, and whoever routes to it next
        needs the token. Only callers holding the cluster's Ray token can ask."""
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.write(unseal(key, sealed_bundle))
            self._process.stdin.close()
        self._token = token
        return self.describe()

    def describe(self) -> dict[str, Any]:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return {
            "url": f"http://{host}:{self._port}",
            "pid": self._process.pid,
            "worker_pid": os.getpid(),
            "node": self._node,
            "token": self._token,
            "exited": self._process.poll() is not None,
        }

    def wait_exit(self) -> int:
        return self._process.wait()

    def stop(self, grace_s: float) -> int:
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._process.stdin.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
        return self._process.wait()


__all__ = ["ReplicaActor"]
