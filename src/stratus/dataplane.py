"""The data plane: resolve a model reference to a version and run it. Every protocol adapter (V2, V1,
OpenAI, the SDK in-process) calls this one object, so they all behave the same."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from stratus.errors import NotFound, NotReady
from stratus.registry import RegistryService, VersionInfo
from stratus.runtime import ModelPool, ModelRunner, Tensor
from stratus.types import Signature


@dataclass(frozen=True)
class InferenceResult:
    version: VersionInfo
    outputs: dict[str, Tensor]


class DataPlane:
    def __init__(
        self, registry: RegistryService, pool: ModelPool, *, workers: int = 8, resolve_ttl_s: float = 2.0
    ):
        self.registry = registry
        self.pool = pool
        self._ttl = resolve_ttl_s
        self._resolved: dict[tuple[str, str | None], tuple[float, VersionInfo]] = {}
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stratus-infer")
        registry.on_change(self._forget)

    def _forget(self, model: str) -> None:
        for key in [k for k in self._resolved if k[0] == model]:
            self._resolved.pop(key, None)

    def resolve(self, name: str, ref: str | None = None) -> VersionInfo:
        """Cached registry lookup. Changes made through this process's registry invalidate at once;
        the TTL bounds staleness for changes made by another process sharing the database."""
        key = (name, ref)
        hit = self._resolved.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        version = self.registry.resolve(name, ref)
        self._resolved[key] = (now + self._ttl, version)
        return version

    @staticmethod
    def _check_servable(version: VersionInfo) -> None:
        if version.status != "active":
            raise NotFound(f"version {version.version} of model {version.model!r} is {version.status}")
        if version.health != "healthy":
            raise NotReady(
                f"version {version.version} of model {version.model!r} is unhealthy and not served: "
                f"{version.health_reason}"
            )

    def _load_sync(self, version: VersionInfo) -> ModelRunner:
        def loader() -> tuple[bytes, Signature]:
            return self.registry.read_artifact(version), version.signature

        return self.pool.load(version.id, version.model, version.version, loader)

    async def _runner(self, version: VersionInfo) -> ModelRunner:
        self._check_servable(version)
        runner = self.pool.get(version.id)
        if runner is None:
            loop = asyncio.get_running_loop()
            runner = await loop.run_in_executor(self._executor, self._load_sync, version)
        return runner

    async def infer(
        self, name: str, ref: str | None, inputs: dict[str, Tensor], outputs: list[str] | None = None
    ) -> InferenceResult:
        version = self.resolve(name, ref)
        runner = await self._runner(version)
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._executor, runner.run, inputs, outputs)
        return InferenceResult(version=version, outputs=results)

    async def load(self, name: str, ref: str | None = None) -> VersionInfo:
        version = self.resolve(name, ref)
        await self._runner(version)
        return version

    def unload(self, name: str, ref: str | None = None) -> VersionInfo:
        version = self.resolve(name, ref)
        self.pool.unload(version.id)
        return version

    async def is_ready(self, name: str, ref: str | None = None) -> bool:
        """Ready means loaded, warmed up and healthy. Asking loads the model, as first use would."""
        try:
            await self.load(name, ref)
        except NotReady:
            return False
        return True

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
