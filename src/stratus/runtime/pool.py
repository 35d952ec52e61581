"""Loaded models under a memory budget, each with its sessions and (optionally) a batcher.

A version is loaded once on first use, warmed up, then kept until it is unloaded or, when the budget
is exceeded, evicted as the least recently used model that is idle.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from stratus.runtime.batching import Batcher, BatchObserver
from stratus.runtime.config import ServingConfig
from stratus.runtime.session import Runner
from stratus.types import Tensor

#: The project a model belongs to when none is given (stratus.tenancy's default; not imported from there, which
#: pulls in the store: the runtime layer stays below it, and a replica never loads the database).
DEFAULT_PROJECT = "default"

#: Builds one runner (one instance) with the given intra-op thread count.
RunnerFactory = Callable[[int], Runner]


@dataclass(frozen=True)
class LoadedModel:
    key: int
    name: str
    version: int
    size_bytes: int
    instances: int
    batching: bool
    last_used: float


class ServedModel:
    """The sessions of one version and the batcher in front of them."""

    def __init__(
        self,
        key: int,
        name: str,
        version: int,
        runners: list[Runner],
        config: ServingConfig,
        executor: Executor,
        observer: BatchObserver | None = None,
        project: str = DEFAULT_PROJECT,
    ) -> None:
        self.key, self.name, self.version = key, name, version
        self.project = project  # the tenant whose model this is: metrics carry it
        self.runners = runners
        self.config = config
        self.raw_config: dict[str, object] = {}
        self._executor = executor
        self._next = itertools.cycle(runners)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.last_used = time.monotonic()
        self.size_bytes = sum(r.size_bytes for r in runners)
        signature = runners[0].signature
        self.batcher = (
            Batcher(self._run_any, config.policy(), executor, instances=config.instances)
            if config.batching_enabled(signature)
            else None
        )
        self._observer = observer
        if self.batcher is not None:
            self.batcher.on_batch = observer

    def _run_any(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        with self._lock:
            runner = next(self._next)
        return runner.run_checked(feeds)

    async def infer(
        self, inputs: dict[str, Tensor], outputs: list[str] | None = None, timeout_ms: float | None = None
    ) -> dict[str, Tensor]:
        first = self.runners[0]
        feeds = first.check_inputs(inputs)
        names = first.check_outputs(outputs)
        self.last_used = time.monotonic()
        self.in_flight += 1
        try:
            if self.batcher is not None:
                result = await self.batcher.submit(feeds, timeout_ms)
                return {name: result[name] for name in names}
            with self._lock:
                runner = next(self._next)
            return await asyncio.get_running_loop().run_in_executor(self._executor, runner.run_checked, feeds, names)
        finally:
            self.in_flight -= 1

    def info(self) -> LoadedModel:
        return LoadedModel(
            self.key,
            self.name,
            self.version,
            self.size_bytes,
            self.config.instances,
            self.batcher is not None,
            self.last_used,
        )


class ModelPool:
    def __init__(
        self,
        *,
        threads: int,
        executor: Executor,
        max_loaded_bytes: int = 0,
        observe: Callable[[str, str, int], BatchObserver] | None = None,
    ) -> None:
        self.threads = threads
        self._observe = observe
        self.max_loaded_bytes = max_loaded_bytes
        self._executor = executor
        self._models: dict[int, ServedModel] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()
        self.evictions = 0

    def get(self, key: int) -> ServedModel | None:
        return self._models.get(key)

    def load(
        self,
        key: int,
        name: str,
        version: int,
        factory: RunnerFactory,
        config: ServingConfig,
        project: str = DEFAULT_PROJECT,
    ) -> ServedModel:
        """Return the served model for ``key`` (of ``project``), loading it if needed. Concurrent callers for
        the same key wait for one load instead of loading twice."""
        served = self._models.get(key)
        if served is not None:
            return served
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            served = self._models.get(key)
            if served is None:
                # Intra-op threads are shared out across instances so N instances do not oversubscribe.
                per_instance = max(1, self.threads // config.instances)
                sessions = config.instances if config.separate_sessions else 1
                runners = [factory(per_instance) for _ in range(sessions)]
                for runner in runners:
                    runner.warm_up()
                observer = self._observe(project, name, version) if self._observe is not None else None
                served = ServedModel(key, name, version, runners, config, self._executor, observer, project)
                self._models[key] = served
                self._evict_over_budget(keep=key)
                # A loaded model is long-lived: keep the collector from re-walking it (see settle_heap).
                gc.freeze()
        return served

    def _evict_over_budget(self, keep: int) -> None:
        if self.max_loaded_bytes <= 0:
            return
        while sum(m.size_bytes for m in self._models.values()) > self.max_loaded_bytes:
            idle = [m for k, m in self._models.items() if k != keep and m.in_flight == 0]
            if not idle:
                return
            victim = min(idle, key=lambda m: m.last_used)
            self.unload(victim.key)
            self.evictions += 1

    def unload(self, key: int) -> bool:
        served = self._models.pop(key, None)
        if served is not None and served.batcher is not None:
            served.batcher.close()
        return served is not None

    def loaded(self) -> list[LoadedModel]:
        return [m.info() for m in self._models.values()]

    def snapshot(self) -> list[tuple[str, str, str, int, int]]:
        """(project, model, version, bytes, queued requests) of each loaded version, for metrics."""
        return [
            (m.project, m.name, str(m.version), m.size_bytes, m.batcher.queue_depth if m.batcher is not None else 0)
            for m in list(self._models.values())
        ]
