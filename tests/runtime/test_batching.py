from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from stratus.errors import DeadlineExceeded, InvalidInput, NotReady
from stratus.runtime.batching import (
    FILL_SHARE,
    Batcher,
    BatchPolicy,
    PendingRequest,
    fill_wait,
    split_outputs,
    take_batch,
)


def pending(rows: int, *, deadline: float = 1e9, width: int = 3, dtype: str = "float32") -> PendingRequest:
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
    finally:
        loop.close()
    inputs = {"x": np.zeros((rows, width), dtype=dtype)}
    return PendingRequest(inputs, rows, deadline, 0.0, future)


def test_take_batch_fills_up_to_max_rows_in_order() -> None:
    queue = deque(pending(r) for r in (3, 4, 2, 5))
    batch, expired = take_batch(queue, BatchPolicy(max_batch_size=9), now=0.0)
    assert [r.rows for r in batch] == [3, 4, 2]
    assert expired == [] and [r.rows for r in queue] == [5]


def test_take_batch_drops_expired_requests() -> None:
    queue = deque([pending(1, deadline=5.0), pending(2, deadline=20.0), pending(3, deadline=1.0)])
    batch, expired = take_batch(queue, BatchPolicy(max_batch_size=8), now=10.0)
    assert [r.rows for r in batch] == [2]
    assert sorted(r.rows for r in expired) == [1, 3]
    assert not queue


def test_take_batch_oversized_request_runs_alone() -> None:
    queue = deque([pending(50), pending(1)])
    batch, _ = take_batch(queue, BatchPolicy(max_batch_size=8), now=0.0)
    assert [r.rows for r in batch] == [50]
    batch, _ = take_batch(queue, BatchPolicy(max_batch_size=8), now=0.0)
    assert [r.rows for r in batch] == [1]


def test_take_batch_stops_at_incompatible_inputs() -> None:
    queue = deque([pending(1), pending(1), pending(1, width=4), pending(1, dtype="float64")])
    batch, _ = take_batch(queue, BatchPolicy(max_batch_size=8), now=0.0)
    assert len(batch) == 2 and len(queue) == 2


def test_take_batch_stops_at_a_preferred_size_unless_a_bigger_one_is_reachable() -> None:
    policy = BatchPolicy(max_batch_size=16, preferred_batch_sizes=(4, 8))
    queue = deque(pending(1) for _ in range(6))
    batch, _ = take_batch(queue, policy, now=0.0)
    assert len(batch) == 4  # 8 is out of reach with 6 queued
    queue = deque(pending(1) for _ in range(10))
    batch, _ = take_batch(queue, policy, now=0.0)
    assert len(batch) == 8


def test_fill_wait_an_idle_model_waits_only_the_configured_delay() -> None:
    assert fill_wait(1, BatchPolicy(max_batch_size=16), 0, 0.0, run_s=0.5) == 0.0
    delayed = BatchPolicy(max_batch_size=16, max_queue_delay_ms=4)
    assert fill_wait(1, delayed, 0, 0.001, run_s=0.5) == pytest.approx(0.003)
    assert fill_wait(1, delayed, 0, 0.010, run_s=0.5) == 0.0


def test_fill_wait_while_another_batch_runs_waits_a_share_of_a_run_to_fill() -> None:
    policy = BatchPolicy(max_batch_size=16)
    assert fill_wait(3, policy, 1, 0.0, run_s=0.060) == pytest.approx(FILL_SHARE * 0.060)
    assert fill_wait(3, policy, 1, 0.004, run_s=0.060) == pytest.approx(FILL_SHARE * 0.060 - 0.004)
    assert fill_wait(3, policy, 1, 0.1, run_s=0.060) == 0.0  # its oldest request has waited long enough
    assert fill_wait(16, policy, 1, 0.0, run_s=0.060) == 0.0  # full: runs now
    assert fill_wait(3, policy, 1, 0.0, run_s=0.0) == 0.0  # no run measured yet
    # A configured delay longer than the share still holds.
    assert fill_wait(3, BatchPolicy(max_batch_size=16, max_queue_delay_ms=50), 1, 0.0, 0.060) == pytest.approx(0.05)


def test_policy_validation() -> None:
    with pytest.raises(InvalidInput):
        BatchPolicy(max_batch_size=0)
    with pytest.raises(InvalidInput):
        BatchPolicy(max_batch_size=4, preferred_batch_sizes=(8,))


def test_split_outputs() -> None:
    out = {"y": np.arange(12).reshape(6, 2), "z": np.arange(6)}
    parts = split_outputs(out, [1, 3, 2])
    assert [p["y"].shape[0] for p in parts] == [1, 3, 2]
    assert parts[2]["z"].tolist() == [4, 5]


class Recorder:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        with self.lock:
            self.batches.append(x.shape[0])
        if self.delay_s:
            time.sleep(self.delay_s)
        if np.isnan(x).any():
            raise InvalidInput("NaN in the input")
        return {"y": x * 2, "total": x.sum(axis=1)}


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows() -> None:
    recorder = Recorder(delay_s=0.01)

    async def main() -> None:
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(recorder, BatchPolicy(max_batch_size=16, max_queue_delay_ms=5), pool)
            inputs = [np.full((1, 3), i, dtype=np.float32) for i in range(200)]
            results = await asyncio.gather(*(batcher.submit({"x": x}) for x in inputs))
            batcher.close()
        for i, result in enumerate(results):
            assert result["y"].tolist() == [[2.0 * i] * 3]
            assert result["total"].tolist() == [3.0 * i]

    run(main())
    assert sum(recorder.batches) == 200
    assert max(recorder.batches) > 1
    assert max(recorder.batches) <= 16
    assert len(recorder.batches) < 100


def test_an_error_fails_only_the_request_that_caused_it() -> None:
    recorder = Recorder(delay_s=0.01)

    async def main() -> list[object]:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(recorder, BatchPolicy(max_batch_size=8, max_queue_delay_ms=20), pool)
            xs = [np.ones((1, 3), np.float32) for _ in range(6)]
            xs[3] = np.full((1, 3), np.nan, np.float32)
            results = await asyncio.gather(*(batcher.submit({"x": x}) for x in xs), return_exceptions=True)
            batcher.close()
            return results

    results = run(main())
    assert isinstance(results[3], InvalidInput)
    for i, result in enumerate(results):
        if i != 3:
            assert isinstance(result, dict) and result["y"].tolist() == [[2.0, 2.0, 2.0]]


def test_deadline_expires_in_the_queue() -> None:
    recorder = Recorder(delay_s=0.3)

    async def main() -> list[object]:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(recorder, BatchPolicy(max_batch_size=1, max_queue_delay_ms=0), pool)
            first = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 3), np.float32)}))
            await asyncio.sleep(0.05)  # the first one now occupies the only instance
            second = batcher.submit({"x": np.ones((1, 3), np.float32)}, timeout_ms=50)
            results = await asyncio.gather(first, second, return_exceptions=True)
            batcher.close()
            return results

    first, second = run(main())
    assert isinstance(first, dict)
    assert isinstance(second, DeadlineExceeded)


def test_full_queue_is_refused_with_a_clear_error() -> None:
    recorder = Recorder(delay_s=0.2)

    async def main() -> list[object]:
        with ThreadPoolExecutor(1) as pool:
            policy = BatchPolicy(max_batch_size=1, max_queue_delay_ms=0, max_queue_size=2)
            batcher = Batcher(recorder, policy, pool)
            tasks = []
            for _ in range(5):
                tasks.append(asyncio.ensure_future(batcher.submit({"x": np.ones((1, 3), np.float32)})))
                await asyncio.sleep(0)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            batcher.close()
            return results

    results = run(main())
    refused = [r for r in results if isinstance(r, NotReady)]
    assert refused and "queue is full" in str(refused[0])
    assert any(isinstance(r, dict) for r in results)
