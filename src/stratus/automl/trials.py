"""Trial processes: each fold of a trial runs in a process of its own, never in the AutoML job's child, so a
trial that raises, runs out of memory or is killed is one failed trial and the search goes on.

The processes are forked from a fork server started by the job's child (its preloaded modules make each
start cheap), so they stay in the job's process group: cancelling the job (SIGKILL to the group) ends them
too. Each one sets an address-space limit (``resource.setrlimit(RLIMIT_AS)``) of its size at start plus the
trial's allowance, and uses one thread. A process serves folds one at a time over a pipe; when it dies, the
search replaces it.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import resource
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

#: The fold function a trial's process runs, as ``module:function`` (tests name a faulty one).
DEFAULT_FOLD = "stratus.automl.folds:run_fold"


def _vm_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _serve(conn: Connection, payload: Any, memory_mb: int, fold_path: str) -> None:
    """A trial process's loop: a (config, fold) in, ("ok", result) or ("error", message) out, until None."""
    os.environ["OMP_NUM_THREADS"] = "1"
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        threadpool_limits(1)  # BLAS (numpy, scikit-learn): one thread per trial, the trials are the parallelism
    if memory_mb > 0:
        limit = _vm_bytes() + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    module, _, name = fold_path.partition(":")
    fold_function = getattr(importlib.import_module(module), name)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the job's child is gone
            return
        if message is None:
            return
        config, fold = message
        try:
            result = fold_function(payload, config, fold)
        except MemoryError:
            reply: tuple[str, Any] = ("error", f"out of memory (the trial's limit is {memory_mb} MiB)")
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {str(exc)[:300]}")
        else:
            reply = ("ok", result)
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return


class TrialProcess:
    """One trial process and the fold it runs now."""

    def __init__(self, context: Any, payload: Any, memory_mb: int, fold_path: str) -> None:
        self.conn, theirs = multiprocessing.Pipe(duplex=True)
        self.process = context.Process(target=_serve, args=(theirs, payload, memory_mb, fold_path), daemon=True)
        self.process.start()
        theirs.close()
        self.task: Any = None  # what the search is waiting for from it (its own record of the trial)
        self.since = 0.0

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    @property
    def busy(self) -> bool:
        return self.task is not None

    def run(self, task: Any, config: dict[str, Any], fold: int) -> None:
        self.task, self.since = task, time.monotonic()
        self.conn.send((config, fold))

    def reply(self) -> tuple[str, Any]:
        """The fold's outcome; a process that died instead is a failed trial with the reason."""
        try:
            if self.conn.poll():
                kind, value = self.conn.recv()
                return str(kind), value
        except (EOFError, OSError):
            pass
        self.process.join(timeout=1.0)
        code = self.process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            return "died", f"the trial's process was killed ({name})"
        return "died", f"the trial's process exited with status {code}"

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError, ValueError):
            if self.process.pid is not None:
                os.kill(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ValueError, AssertionError):
            self.process.join(timeout=2.0)
        with contextlib.suppress(OSError):
            self.conn.close()


def fork_context(preload: list[str]) -> Any:
    """A fork server with the trainers' modules loaded once: forking it is quicker than a fresh interpreter,
    and it never carries the job child's threads (forking a threaded process is unsafe)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload)
    return context
