"""Jobs on Ray (``--executor ray``): the training or compression child runs on a Ray node, in an actor that asks for the
job's CPUs and memory, behind the same ``Executor`` seam as the local process.

The semantics are the local executor's: progress lines arrive as the child prints them (the server polls the
job's actor, jobs/ray_child.py; the first line is a ``placed`` event naming the node), ``stop`` kills the child at
once (Ray kills the actor's worker with SIGKILL, and the child goes with it through its lifeline), a stopped or
lost job exits like a killed process (-9), and the result files come back into the server's job folder, where the
job kind registers them as it does for a local child. The dataset and the result travel sealed under a one-use
key (raycluster.seal). When the server dies, Ray ends the actors it owned, so a job re-queued by another server
never runs twice. Works through a cluster's GCS address and through Ray Client (``ray://``) alike.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stratus import framing, raycluster
from stratus.files import write_private
from stratus.jobs.executor import RunningWork, WorkItem
from stratus.jobs.ray_child import JobRunner, placed_line

log = logging.getLogger(__name__)

#: What wait() returns for a job Ray stopped or lost, as for a child killed by SIGKILL.
KILLED = -9
#: How long one poll of the job's actor waits for a line before it returns (progress arrives as it is printed).
POLL_S = 1.0


class RayTask:
    def __init__(self, item: WorkItem, actor_class: Any, cpus: float, memory_mb: int) -> None:
        self._item = item
        self._key, sealed = raycluster.seal(item.dataset)
        request = (item.job_dir / "request.json").read_bytes()
        self._actor: Any = actor_class.options(
            max_restarts=0,  # a retry is the job queue's decision (its retries), never Ray's
            name=f"stratus-job-{item.job_id}",
            **raycluster.resources(cpus, memory_mb),
        ).remote()
        self._started: Any = self._actor.start.remote(item.module, request, self._key, sealed, item.threads)
        self._stopped = threading.Event()
        self._exit: tuple[Any, ...] | None = None
        self._error = ""

    def lines(self) -> Iterator[str]:
        import ray

        try:
            yield placed_line(ray.get(self._started))  # waits while Ray finds room for the job
            read = 0
            while self._exit is None:
                count, sealed, done = ray.get(self._actor.poll.remote(read, POLL_S))
                lines = json.loads(raycluster.unseal(self._key, sealed)) if count else []
                read += len(lines)
                yield from lines
                if done is not None and not lines:
                    self._exit = tuple(done)
        except Exception as exc:  # stopped, its worker or node died: it ends like a killed child
            self._error = f"the job's Ray actor ended: {type(exc).__name__}: {str(exc)[:500]}"
            if not self._stopped.is_set():
                log.warning("job %s: %s", self._item.job_id, self._error)

    def wait(self) -> int:
        if self._exit is None:
            for _ in self.lines():  # drain what the caller did not read
                pass
        self._release()
        if self._exit is None:
            return KILLED
        code = int(self._exit[0])
        if code == 0:
            try:
                self._write_result(bytes(self._exit[3]))
            except (ValueError, OSError) as exc:  # the job fails with a reason, never hangs in "running"
                self._exit, self._error = None, f"could not keep the job's result: {exc}"
                return 1
        return code

    def _write_result(self, sealed: bytes) -> None:
        keep_result(self._item.job_dir, framing.unpack(raycluster.unseal(self._key, sealed)))

    def _release(self) -> None:
        """The job is over: give its actor's resources back to the cluster."""
        import ray

        with contextlib.suppress(Exception):
            ray.kill(self._actor, no_restart=True)

    def stop(self) -> None:
        """Kill the job at once: Ray kills the actor's worker with SIGKILL, and the child goes with it (its
        lifeline), as a local child's process group is killed."""
        if self._exit is not None or self._stopped.is_set():
            return
        self._stopped.set()
        self._release()

    def cpu_seconds(self) -> float:
        return float(self._exit[1]) if self._exit is not None else 0.0

    def stderr_tail(self) -> str:
        if self._exit is not None:
            return str(self._exit[2])
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
        self._actor_class = ray.remote(JobRunner)  # made once: Ray exports the class to the cluster when first used

    def start(self, item: WorkItem) -> RunningWork:
        return RayTask(item, self._actor_class, self._cpus or float(item.threads), self._memory_mb)

    def placement_problem(self, need: dict[str, Any], threads: int, *, now: bool) -> str | None:
        """Why the cluster cannot place a data-parallel job's ``need`` (workers, CPUs and memory per worker) besides
        the job's own actor: ever (its nodes' totals; ``now=False``) or at this moment (what is free). None when it
        can, or when the cluster does not say (the job then waits in Ray's queue)."""
        try:
            nodes = _node_resources(available=now)
        except Exception:  # e.g. through Ray Client: no per-node view; Ray Train waits for room itself
            return None
        return placement_problem(list(nodes.values()), need, self._cpus or float(threads), now=now)


def placement_problem(nodes: list[dict[str, float]], need: dict[str, Any], driver: float, *, now: bool) -> str | None:
    """Whether ``need``'s workers fit on ``nodes`` (each a node's Ray resources, total or free) beside the job's
    driver actor of ``driver`` CPUs: the driver takes the roomiest node, then each node holds as many workers as its
    CPUs and memory allow. The reason when they do not fit; None when they do."""
    workers, cpus = int(need["workers"]), float(need["cpus_per_worker"])
    memory = int(need.get("memory_mb_per_worker", 0)) * 1024 * 1024
    ordered = sorted(nodes, key=lambda r: -r.get("CPU", 0.0))
    fits = 0
    for index, room in enumerate(ordered):
        cpu_room = room.get("CPU", 0.0) - (driver if index == 0 else 0.0)
        by_cpu = int(cpu_room / cpus + 1e-9) if cpu_room > 0 else 0
        by_memory = int(room.get("memory", 0.0) // memory) if memory > 0 else by_cpu
        fits += max(0, min(by_cpu, by_memory))
    if fits >= workers:
        return None
    asked = f"{workers} worker(s) of {cpus:g} CPU" + (f" and {memory >> 20} MB" if memory else "")
    where = ", ".join(
        f"{r.get('CPU', 0.0):g} CPU" + (f" {int(r.get('memory', 0.0)) >> 20} MB" if memory else "") for r in ordered
    )
    if not now:
        return (
            f"the Ray cluster can never place {asked} each (plus {driver:g} CPU for the job's driver): "
            f"its {len(ordered)} node(s) have {where or 'nothing'}, room for {fits} worker(s)"
        )
    return (
        f"waiting for room on the Ray cluster: needs {asked} each plus {driver:g} CPU; free now: {where or 'nothing'}"
    )


def _node_resources(available: bool) -> dict[str, dict[str, float]]:
    """Each alive node's resources (total, or free now), from Ray's GCS."""
    from ray._private import state

    found: dict[str, dict[str, float]] = (
        state.available_resources_per_node()  # type: ignore[no-untyped-call]  # Ray leaves it unannotated
        if available
        else state.total_resources_per_node()  # type: ignore[no-untyped-call]
    )
    return found


__all__ = ["KILLED", "RayExecutor", "RayTask", "keep_result", "placement_problem"]
