"""Jobs as Ray tasks (``--executor ray``): the training or compression child runs on a Ray node, with the job's CPU
and memory request, behind the same ``Executor`` seam as the local process.

The semantics are the local executor's: progress lines arrive as the child prints them (a streaming generator
task, jobs/ray_child.py), ``stop`` kills the child at once (a force cancel: Ray kills the task's worker with
SIGKILL, and the child goes with it through its lifeline), a stopped or lost task exits like a killed process
(-9), and the result files come back into the server's job folder, where the job kind registers them as it does
for a local child. The dataset and the result travel sealed under a one-use key (raycluster.seal). When the
server dies, Ray ends the tasks it owned, so a job re-queued at the next start never runs twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stratus import framing, raycluster
from stratus.files import write_private
from stratus.jobs.executor import RunningWork, WorkItem
from stratus.jobs.ray_child import EXIT, LINE, run_job

log = logging.getLogger(__name__)

#: What wait() returns for a task Ray stopped or lost, as for a child killed by SIGKILL.
KILLED = -9


class RayTask:
    def __init__(self, item: WorkItem, remote: Any, cpus: float, memory_mb: int) -> None:
        self._item = item
        self._key, sealed = raycluster.seal(item.dataset)
        request = (item.job_dir / "request.json").read_bytes()
        options = remote.options(
            num_returns="streaming",
            max_retries=0,  # a retry is the job queue's decision (its retries), never Ray's
            name=f"stratus-job-{item.job_id}",
            **raycluster.resources(cpus, memory_mb),
        )
        self._refs: Any = options.remote(item.module, request, self._key, sealed, item.threads)
        self._stopped = threading.Event()
        self._exit: tuple[Any, ...] | None = None
        self._error = ""

    def lines(self) -> Iterator[str]:
        import ray

        try:
            for ref in self._refs:
                message = ray.get(ref)
                if message[0] == LINE:
                    yield str(message[1])
                elif message[0] == EXIT:
                    self._exit = tuple(message)
        except Exception as exc:  # cancelled, its worker or node died: it ends like a killed child
            self._error = f"the Ray task ended: {type(exc).__name__}: {str(exc)[:500]}"
            if not self._stopped.is_set():
                log.warning("job %s: %s", self._item.job_id, self._error)

    def wait(self) -> int:
        if self._exit is None:
            for _ in self.lines():  # drain what the caller did not read
                pass
        if self._exit is None:
            return KILLED
        code = int(self._exit[1])
        if code == 0:
            try:
                self._write_result(bytes(self._exit[4]))
            except (ValueError, OSError) as exc:  # the job fails with a reason, never hangs in "running"
                self._exit, self._error = None, f"could not keep the job's result: {exc}"
                return 1
        return code

    def _write_result(self, sealed: bytes) -> None:
        keep_result(self._item.job_dir, framing.unpack(raycluster.unseal(self._key, sealed)))

    def stop(self) -> None:
        import ray

        if self._exit is not None or self._stopped.is_set():
            return
        self._stopped.set()
        try:
            ray.cancel(self._refs, force=True)
        except Exception as exc:  # already finished or gone: nothing left to stop
            log.debug("job %s: cancel: %s", self._item.job_id, exc)

    def cpu_seconds(self) -> float:
        return float(self._exit[2]) if self._exit is not None else 0.0

    def stderr_tail(self) -> str:
        if self._exit is not None:
            return str(self._exit[3])
        return self._error


def keep_result(job_dir: Path, files: dict[str, bytes]) -> None:
    """Write what the child wrote on its node into the server's job folder (0600), refusing any name that would
    land outside it: the names come from the child."""
    root = job_dir.resolve()
    for name, data in files.items():
        path = (root / name).resolve()
        if not path.is_relative_to(root) or path == root:
            raise ValueError(f"the job's result names a file outside its folder: {name!r}")
        write_private(path, data)


class RayExecutor:
    """Runs each job as a Ray task on the cluster at ``address``, asking for ``cpus`` (default: the job's
    threads) and ``memory_mb`` of memory (0: no memory request)."""

    def __init__(self, address: str, cpus: float | None = None, memory_mb: int = 0) -> None:
        import ray

        raycluster.connect(address)
        self._cpus = cpus
        self._memory_mb = memory_mb
        self._remote = ray.remote(run_job)  # made once: Ray exports a remote function to the cluster when first used

    def start(self, item: WorkItem) -> RunningWork:
        return RayTask(item, self._remote, self._cpus or float(item.threads), self._memory_mb)


__all__ = ["KILLED", "RayExecutor", "RayTask", "keep_result"]
