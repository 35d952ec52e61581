"""The server's side of the explanation workers: a few child processes, started on first use, each running
one explanation at a time (worker.py), with a bound on requests waiting for one and a time limit per
explanation. Standard library and numpy only: shap is imported by the workers, never here.

- Over the bound (``workers + queue`` explanations running or waiting), a request is refused at once with
  RateLimited (429, Retry-After), as an overloaded model's queue refuses inference.
- An explanation over its time limit kills its worker (the only way to stop shap mid-computation) and
  answers DeadlineExceeded (504); the next request starts a fresh worker.
- Waiting for a worker happens in the pool's own threads, so explanations never hold the threads or the
  event loop that inference uses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stratus.errors import DeadlineExceeded, InvalidInput, NotReady, RateLimited
from stratus.explain import wire
from stratus.types import Array

log = logging.getLogger(__name__)
#: A worker computes on one core at most, like its ONNX Runtime session: numpy's BLAS (shap's kernel method solves
#: least squares on every row), OpenMP and numba would otherwise each start a thread per core.
_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


class _Worker:
    def __init__(self, start_timeout_s: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stratus.explain.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **_ONE_THREAD},
        )
        ready = self._answer(start_timeout_s)
        if ready is None or not wire.decode(ready)[0].get("ready"):
            self.kill()
            raise NotReady("an explanation worker did not start")

    def _answer(self, timeout_s: float) -> bytes | None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([self.process.stdout], [], [], left)
            if readable:
                return wire.read_frame(self.process.stdout)

    def call(self, frame: bytes, timeout_s: float) -> bytes:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(frame)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            self.kill()
            raise NotReady("the explanation worker is gone; try again") from error
        answer = self._answer(timeout_s)
        if answer is None:
            self.kill()
            raise DeadlineExceeded(f"the explanation took longer than its limit of {timeout_s:g} s")
        return answer

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class ExplainPool:
    def __init__(
        self, workers: int, queue_size: int, timeout_s: float, start_timeout_s: float = 120.0, cpu_share: float = 1.0
    ) -> None:
        self.workers, self.queue_size, self.timeout_s = workers, queue_size, timeout_s
        self.cpu_share = cpu_share
        self.start_timeout_s = start_timeout_s
        self._slots: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(workers):
            self._slots.put(None)  # a worker is started when a request first takes its slot
        self._pending = 0
        self._lock = threading.Lock()
        self._started: list[_Worker] = []
        self._threads = ThreadPoolExecutor(workers + queue_size, thread_name_prefix="explain")
        self._closed = False

    @property
    def pending(self) -> int:
        return self._pending

    def _run(self, frame: bytes) -> tuple[dict[str, Any], dict[str, Array]]:
        worker = self._slots.get()
        rest_s = 0.0
        try:
            if self._closed:
                raise NotReady("the server is shutting down")
            if worker is None or not worker.alive:
                worker = _Worker(self.start_timeout_s)
                with self._lock:
                    self._started = [w for w in self._started if w.alive] + [worker]
            answer, result, _ = wire.decode(worker.call(frame, self.timeout_s))
            # The worker's pause (cpu_share): it goes back to the slots later, the answer goes out now.
            rest_s = float(answer.get("cpu_s", 0.0)) * (1.0 / self.cpu_share - 1.0)
            return answer, result
        finally:
            kept = worker if worker is not None and worker.alive else None
            if rest_s > 0 and kept is not None:
                timer = threading.Timer(rest_s, self._slots.put, args=(kept,))
                timer.daemon = True
                timer.start()
            else:
                self._slots.put(kept)

    async def run(
        self, meta: Mapping[str, Any], arrays: Mapping[str, Array], blobs: Mapping[str, bytes]
    ) -> tuple[dict[str, Any], dict[str, Array]]:
        with self._lock:
            if self._pending >= self.workers + self.queue_size:
                raise RateLimited(
                    f"{self._pending} explanations are running or waiting, the most this server takes; retry later",
                    retry_after_s=max(1.0, self.timeout_s / 4),
                )
            self._pending += 1
        try:
            frame = wire.encode(meta, arrays, blobs)
            answer, result = await asyncio.get_running_loop().run_in_executor(self._threads, self._run, frame)
        finally:
            with self._lock:
                self._pending -= 1
        if not answer.get("ok"):
            if answer.get("invalid"):
                raise InvalidInput(str(answer.get("error")))
            raise RuntimeError(f"the explanation failed: {answer.get('error')}")
        return answer, result

    def close(self) -> None:
        self._closed = True
        with self._lock:
            started, self._started = self._started, []
        for worker in started:
            worker.kill()
        self._threads.shutdown(wait=False, cancel_futures=True)
