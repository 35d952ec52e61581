"""Dynamic batching: concurrent requests for one model version are merged into one ONNX Runtime run.

``take_batch`` is the whole policy - which queued requests go into the next batch - as one small pure
function, tested on its own. ``Batcher`` is the loop around it: it waits for a free model instance,
gives late arrivals up to ``max_queue_delay_ms`` to join, runs the batch off the event loop and hands
each request its own rows back.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from stratus.errors import DeadlineExceeded, InvalidInput, NotReady, StratusError
from stratus.types import Tensor

RunFn = Callable[[dict[str, Tensor]], dict[str, Tensor]]
BatchObserver = Callable[[list[float], int, float], None]


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 32
    max_queue_delay_ms: float = 0.0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 4096
    default_timeout_ms: float = 30_000.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise InvalidInput("max_batch_size must be at least 1")
        if self.max_queue_delay_ms < 0:
            raise InvalidInput("max_queue_delay_ms cannot be negative")
        if any(size < 1 or size > self.max_batch_size for size in self.preferred_batch_sizes):
            raise InvalidInput("preferred_batch_sizes must lie between 1 and max_batch_size")
        if self.max_queue_size < 1:
            raise InvalidInput("max_queue_size must be at least 1")


@dataclass(eq=False)
class PendingRequest:
    inputs: dict[str, Tensor]
    rows: int
    deadline: float
    enqueued_at: float
    future: asyncio.Future[dict[str, Tensor]] = field(repr=False)

    def batch_key(self) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
        """Requests can share a batch only when every input agrees on dtype and non-batch dims."""
        return tuple((name, t.dtype.str, t.shape[1:]) for name, t in sorted(self.inputs.items()))


def take_batch(
    queue: deque[PendingRequest], policy: BatchPolicy, now: float
) -> tuple[list[PendingRequest], list[PendingRequest]]:
    """Pop the next batch from the head of ``queue``; return it with the requests that expired.

    Rules: expired requests are dropped; the batch grows in arrival order while it fits in
    ``max_batch_size`` rows and the inputs are compatible; it stops early on reaching the largest
    preferred size it can; a request larger than ``max_batch_size`` runs alone.
    """
    expired: list[PendingRequest] = []
    batch: list[PendingRequest] = []
    rows = 0
    key = None
    preferred = sorted(policy.preferred_batch_sizes, reverse=True)
    while queue:
        head = queue[0]
        if head.deadline <= now or head.future.done():
            queue.popleft()
            if not head.future.done():
                expired.append(head)
            continue
        if batch and (rows + head.rows > policy.max_batch_size or head.batch_key() != key):
            break
        queue.popleft()
        batch.append(head)
        rows += head.rows
        key = head.batch_key()
        if rows >= policy.max_batch_size or (
            preferred and rows in preferred and _no_bigger_fits(queue, rows, preferred)
        ):
            break
    return batch, expired


#: While another batch of the model runs, the next one may wait up to this share of a batch's run time to fill.
FILL_SHARE = 0.1


def fill_wait(
    queued_rows: int, policy: BatchPolicy, others_running: int, oldest_waited_s: float, run_s: float
) -> float:
    """How much longer the next batch waits for more requests before it runs (seconds; 0: run now).

    Up to ``max_queue_delay_ms`` from its oldest request, as configured. Besides that, while another batch of
    the same model is running (``instances`` > 1), up to ``FILL_SHARE`` of a batch's run time (``run_s``, recent
    runs): the requests that batch answers are likely to come back at once, and a batch that starts with the
    first of them and leaves the rest to the next one runs two small batches where one would do (MiniLM,
    2 instances at concurrency 32: 9.6 rows a batch against the 16 it allows). When no other batch runs, it
    never waits longer than configured: an idle model answers at once. A full batch never waits.
    """
    if queued_rows >= policy.max_batch_size:
        return 0.0
    limit = policy.max_queue_delay_ms / 1000.0
    if others_running:
        limit = max(limit, FILL_SHARE * run_s)
    return max(0.0, limit - oldest_waited_s)


def _no_bigger_fits(queue: deque[PendingRequest], rows: int, preferred: list[int]) -> bool:
    """Stop at a preferred size unless the queue already holds enough rows to reach a bigger one."""
    waiting = sum(r.rows for r in queue)
    return not any(size > rows and rows + waiting >= size for size in preferred)


def split_outputs(outputs: dict[str, Tensor], sizes: list[int]) -> list[dict[str, Tensor]]:
    bounds = np.cumsum(sizes)[:-1]
    parts = {name: np.split(array, bounds) for name, array in outputs.items()}
    return [{name: parts[name][i] for name in outputs} for i in range(len(sizes))]


class Batcher:
    def __init__(self, run: RunFn, policy: BatchPolicy, executor: Executor, *, instances: int = 1) -> None:
        self.run = run
        self.policy = policy
        self._executor = executor
        self._queue: deque[PendingRequest] = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(instances)
        self._running = 0  # batches being run now
        self._run_s = 0.0  # a batch's run time, smoothed over recent runs
        self._task: asyncio.Task[None] | None = None
        #: Called after each run with each request's queue wait, the rows run and the run's seconds.
        self.on_batch: BatchObserver | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    async def submit(self, inputs: dict[str, Tensor], timeout_ms: float | None = None) -> dict[str, Tensor]:
        if len(self._queue) >= self.policy.max_queue_size:
            raise NotReady(f"the model's request queue is full ({self.policy.max_queue_size} waiting); retry shortly")
        rows = _rows_of(inputs)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        timeout_s = (timeout_ms if timeout_ms is not None else self.policy.default_timeout_ms) / 1000.0
        pending = PendingRequest(inputs, rows, now + timeout_s, now, loop.create_future())
        self._queue.append(pending)
        self._arrived.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop())
        return await pending.future

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            # Give more requests a chance to join (fill_wait says how long).
            while self._queue:
                remaining = fill_wait(
                    _queued_rows(self._queue),
                    self.policy,
                    self._running,
                    time.monotonic() - self._queue[0].enqueued_at,
                    self._run_s,
                )
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch, expired = take_batch(self._queue, self.policy, time.monotonic())
            for request in expired:
                request.future.set_exception(
                    DeadlineExceeded("the request's deadline passed while it waited in the queue")
                )
            if not batch:
                self._slots.release()
                continue
            self._running += 1
            asyncio.get_running_loop().create_task(self._execute(batch))

    async def _execute(self, batch: list[PendingRequest]) -> None:
        loop = asyncio.get_running_loop()
        try:
            started = time.monotonic()
            results: list[dict[str, Tensor] | BaseException]
            try:
                results = list(await loop.run_in_executor(self._executor, self._run_batch, batch))
            except StratusError:
                if len(batch) == 1:
                    raise
                # One bad request must not fail its neighbours: run each alone to find the culprit.
                results = [await self._run_alone(loop, request) for request in batch]
            seconds = time.monotonic() - started
            self._run_s = seconds if not self._run_s else 0.8 * self._run_s + 0.2 * seconds
            if self.on_batch is not None:
                waits = [started - r.enqueued_at for r in batch]
                self.on_batch(waits, sum(r.rows for r in batch), seconds)
            for request, result in zip(batch, results, strict=True):
                if not request.future.done():
                    if isinstance(result, BaseException):
                        request.future.set_exception(result)
                    else:
                        request.future.set_result(result)
        except BaseException as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
        finally:
            self._running -= 1
            self._slots.release()

    async def _run_alone(
        self, loop: asyncio.AbstractEventLoop, request: PendingRequest
    ) -> dict[str, Tensor] | BaseException:
        try:
            return await loop.run_in_executor(self._executor, self.run, request.inputs)
        except StratusError as exc:
            return exc

    def _run_batch(self, batch: list[PendingRequest]) -> list[dict[str, Tensor]]:
        if len(batch) == 1:
            return [self.run(batch[0].inputs)]
        merged = {name: np.concatenate([r.inputs[name] for r in batch]) for name in batch[0].inputs}
        return split_outputs(self.run(merged), [r.rows for r in batch])

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for request in self._queue:
            if not request.future.done():
                request.future.set_exception(NotReady("the model was unloaded"))
        self._queue.clear()


def _rows_of(inputs: dict[str, Tensor]) -> int:
    sizes = {t.shape[0] if t.ndim else 0 for t in inputs.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise InvalidInput("every input of a batched model needs the same number of rows in its first dimension")
    return sizes.pop()


def _queued_rows(queue: deque[PendingRequest]) -> int:
    return sum(r.rows for r in queue)
