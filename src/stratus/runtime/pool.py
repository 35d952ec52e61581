"""Loaded model sessions, keyed by version id, loaded once on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from stratus.runtime.session import ModelRunner
from stratus.types import Signature

Loader = Callable[[], tuple[bytes, Signature]]


@dataclass(frozen=True)
class LoadedModel:
    key: int
    name: str
    version: int
    size_bytes: int


class ModelPool:
    def __init__(self, *, threads: int) -> None:
        self.threads = threads
        self._runners: dict[int, ModelRunner] = {}
        self._meta: dict[int, LoadedModel] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: int) -> ModelRunner | None:
        return self._runners.get(key)

    def load(self, key: int, name: str, version: int, loader: Loader) -> ModelRunner:
        """Return the runner for ``key``, loading it with ``loader`` if needed. Concurrent callers for
        the same key wait for one load instead of loading twice."""
        runner = self._runners.get(key)
        if runner is not None:
            return runner
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            runner = self._runners.get(key)
            if runner is None:
                data, signature = loader()
                runner = ModelRunner(data, signature, threads=self.threads)
                runner.warm_up()
                self._meta[key] = LoadedModel(key, name, version, runner.size_bytes)
                self._runners[key] = runner
        return runner

    def unload(self, key: int) -> bool:
        self._meta.pop(key, None)
        return self._runners.pop(key, None) is not None

    def loaded(self) -> list[LoadedModel]:
        return list(self._meta.values())
