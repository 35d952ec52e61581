"""The data plane: resolve a model reference to a version and run it. Every protocol adapter (V2, V1,
OpenAI, the SDK in-process) calls this one object, so they all behave the same."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from stratus import tenancy
from stratus.errors import NotFound, NotReady, StratusError
from stratus.protocol import status_for
from stratus.registry.records import ModelInfo, VersionInfo
from stratus.runtime import ModelPool, ModelRunner, ServedModel, ServingConfig, Tensor
from stratus.runtime.batching import BatchObserver
from stratus.runtime.metrics import InferenceMetrics
from stratus.runtime.pipeline import ModelRef, PipelineRunner, PipelineSpec
from stratus.runtime.pool import RunnerFactory

log = logging.getLogger(__name__)

#: Largest number of values per input kept when a request's payload is logged.
PAYLOAD_VALUES_LIMIT = 1000


@dataclass(frozen=True)
class InferenceResult:
    version: VersionInfo
    outputs: dict[str, Tensor]


@dataclass(frozen=True)
class ServedRequest:
    """One successful inference, as usage metering and the payload log hear of it."""

    caller: tenancy.Caller
    model: str
    version: int
    protocol: str
    items: int
    tokens: int
    seconds: float
    inputs: dict[str, Tensor]

    def payload(self) -> dict[str, Any]:
        """The inputs as JSON (the first PAYLOAD_VALUES_LIMIT values of each), for the payload log."""
        return {
            name: {"shape": list(array.shape), "data": [_jsonable(v) for v in array.ravel()[:PAYLOAD_VALUES_LIMIT]]}
            for name, array in self.inputs.items()
        }


class InferenceEvent(NamedTuple):
    """One inference, served or failed, as the monitors (inference log, metrics history) hear of it. A
    tuple, not a dataclass: it is built on the event loop for every request while a monitor listens."""

    at: float  #: Unix time it ended
    caller: tenancy.Caller
    model: str  #: the model that served; "" when an endpoint failed before a version answered
    version: int  #: 0 when unknown
    endpoint: str  #: the endpoint called, "" for a model called by its own name
    protocol: str
    seconds: float
    status: int  #: HTTP-style status: 200 served, else the error's (protocol.status_for)
    error: str  #: the error's kind, "" when served
    items: int
    inputs: dict[str, Tensor]
    outputs: dict[str, Tensor] | None


InferenceObserver = Callable[[InferenceEvent], None]


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value.item() if hasattr(value, "item") else value


ServedListener = Callable[[ServedRequest], None]


def _items_of(inputs: dict[str, Tensor]) -> int:
    first = next(iter(inputs.values()), None)
    if first is None:
        return 0
    return int(first.shape[0]) if first.ndim else 1


class Catalog(Protocol):
    """Where the data plane finds versions and their bytes: the registry, or an endpoint bundle."""

    def on_change(self, listener: Callable[[str], None]) -> None: ...
    def list_models(self) -> list[ModelInfo]: ...
    def list_versions(self, name: str) -> list[VersionInfo]: ...
    def resolve(self, name: str, ref: str | int | None = None) -> VersionInfo: ...
    def read_artifact(self, version: VersionInfo) -> bytes: ...
    def read_file(self, version: VersionInfo, name: str) -> bytes: ...
    def read_ref(self, ref: ModelRef) -> bytes: ...


class RoutedEndpoint(Protocol):
    """An endpoint: a name whose requests are routed to one of several versions (see stratus.deploy)."""

    def versions(self) -> list[VersionInfo]:
        """The versions it routes to, the primary (heaviest) target first."""
        ...

    def ready(self) -> bool: ...

    async def infer(
        self, inputs: dict[str, Tensor], outputs: list[str] | None, timeout_ms: float | None
    ) -> tuple[VersionInfo, dict[str, Tensor]]: ...


class EndpointDirectory(Protocol):
    def find(self, name: str) -> RoutedEndpoint | None:
        """The caller's project's endpoint of that name, if any."""
        ...

    def names(self) -> list[str]:
        """The caller's project's endpoints."""
        ...


class DataPlane:
    def __init__(
        self,
        registry: Catalog,
        *,
        threads: int,
        workers: int = 8,
        max_loaded_bytes: int = 0,
        resolve_ttl_s: float = 2.0,
    ) -> None:
        self.registry = registry
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stratus-infer")
        self.metrics = InferenceMetrics()
        self.pool = ModelPool(
            threads=threads, executor=self._executor, max_loaded_bytes=max_loaded_bytes, observe=self._batch_observer
        )
        self.metrics.watch_pool(self.pool.snapshot)
        self._ttl = resolve_ttl_s
        self._resolved: dict[tuple[str, str, str | None], tuple[float, VersionInfo]] = {}
        self.served_listeners: list[ServedListener] = []
        self.observers: list[InferenceObserver] = []
        self.endpoints: EndpointDirectory | None = None
        registry.on_change(self._forget)

    def _batch_observer(self, project: str, model: str, version: int) -> BatchObserver:
        queue_time, compute_time, batch_size = self.metrics.batch_series(project, model, str(version))

        def observe(waits: list[float], rows: int, seconds: float) -> None:
            for wait in waits:
                queue_time.observe(wait)
            compute_time.observe(seconds)
            batch_size.observe(rows)

        return observe

    def _forget(self, model: str) -> None:
        for key in [k for k in self._resolved if k[1] == model]:
            self._resolved.pop(key, None)
        # Free the memory of loaded versions that were deleted, archived or found unhealthy.
        loaded = [m for m in self.pool.loaded() if m.name == model]
        if loaded:
            try:
                live = {v.id: v for v in self.registry.list_versions(model)}
            except NotFound:
                live = {}
            for entry in loaded:
                version = live.get(entry.key)
                if version is None or version.status != "active" or version.health != "healthy":
                    self.pool.unload(entry.key)

    def endpoint(self, name: str, ref: str | None = None) -> RoutedEndpoint | None:
        """The endpoint called ``name``, when there is one and no version was asked for."""
        if ref is not None or self.endpoints is None:
            return None
        return self.endpoints.find(name)

    def endpoint_names(self) -> list[str]:
        return self.endpoints.names() if self.endpoints is not None else []

    def versions_of(self, name: str) -> list[VersionInfo]:
        """The versions a name serves: an endpoint's targets, or a model's versions."""
        endpoint = self.endpoint(name)
        return endpoint.versions() if endpoint is not None else self.registry.list_versions(name)

    def resolve(self, name: str, ref: str | None = None) -> VersionInfo:
        """The version a reference means (for an endpoint, its primary target). Cached registry lookup:
        changes made through this process's registry invalidate at once; the TTL bounds staleness for
        changes made by another process sharing the database."""
        endpoint = self.endpoint(name, ref)
        if endpoint is not None:
            return endpoint.versions()[0]
        return self._resolve_model(name, ref)

    def _resolve_model(self, name: str, ref: str | None) -> VersionInfo:
        key = (tenancy.current_project(), name, ref)
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

    def _runner_factory(self, version: VersionInfo) -> RunnerFactory:
        if version.format == "pipeline":
            spec = PipelineSpec.parse(self.registry.read_artifact(version))
            return lambda threads: PipelineRunner(
                spec,
                lambda file: self.registry.read_file(version, file),
                self.registry.read_ref,
                threads=threads,
            )
        source = self.registry.read_artifact(version)
        return lambda threads: ModelRunner(source, version.signature, threads=threads)

    def _load_sync(self, version: VersionInfo, project: str) -> ServedModel:
        loader = self._runner_factory(version)
        config = ServingConfig.parse(version.config)
        served = self.pool.load(version.id, version.model, version.version, loader, config, project)
        served.raw_config = version.config
        return served

    async def _served(self, version: VersionInfo) -> ServedModel:
        self._check_servable(version)
        served = self.pool.get(version.id)
        if served is not None and served.raw_config != version.config:
            self.pool.unload(version.id)  # the serving config changed: load again with the new one
            served = None
        if served is None:
            loop = asyncio.get_running_loop()
            # The project is read here: run_in_executor does not carry the caller's context to the thread.
            served = await loop.run_in_executor(self._executor, self._load_sync, version, tenancy.current_project())
        return served

    async def infer(
        self,
        name: str,
        ref: str | None,
        inputs: dict[str, Tensor],
        outputs: list[str] | None = None,
        timeout_ms: float | None = None,
        protocol: str = "python",
    ) -> InferenceResult:
        started = time.perf_counter()
        model_label, version_label = "(unresolved)", ""  # unknown names must not grow the label set
        endpoint = None
        version: VersionInfo | None = None
        try:
            endpoint = self.endpoint(name, ref)
            if endpoint is not None:
                model_label = name
                version, results = await endpoint.infer(inputs, outputs, timeout_ms)
            else:
                version = self._resolve_model(name, ref)  # not an endpoint: asked just above
                model_label, version_label = name, str(version.version)
                results = await self.run_version(version, inputs, outputs, timeout_ms)
            version_label = str(version.version)
        except StratusError as exc:
            self.metrics.failed(tenancy.current_project(), model_label, version_label, protocol, exc.kind)
            if self.observers and model_label != "(unresolved)":  # a name that exists failed
                self._observe(
                    InferenceEvent(
                        time.time(),
                        tenancy.current(),
                        version.model if version is not None else "",
                        version.version if version is not None else 0,
                        name if endpoint is not None else "",
                        protocol,
                        time.perf_counter() - started,
                        status_for(exc),
                        exc.kind,
                        _items_of(inputs),
                        inputs,
                        None,
                    )
                )
            raise
        requests, latency = self.metrics.request_series(tenancy.current_project(), name, version_label, protocol)
        requests.inc()
        elapsed = time.perf_counter() - started
        latency.observe(elapsed)
        if self.observers:
            self._observe(
                InferenceEvent(
                    time.time(),
                    tenancy.current(),
                    version.model,
                    version.version,
                    name if endpoint is not None else "",
                    protocol,
                    elapsed,
                    200,
                    "",
                    _items_of(inputs),
                    inputs,
                    results,
                )
            )
        if self.served_listeners:
            tokens = results.get("token_count")
            self._tell(
                ServedRequest(
                    caller=tenancy.current(),
                    model=name,
                    version=version.version,
                    protocol=protocol,
                    items=_items_of(inputs),
                    tokens=int(tokens.sum()) if tokens is not None else 0,
                    seconds=elapsed,
                    inputs=inputs,
                )
            )
        return InferenceResult(version=version, outputs=results)

    async def run_version(
        self,
        version: VersionInfo,
        inputs: dict[str, Tensor],
        outputs: list[str] | None = None,
        timeout_ms: float | None = None,
    ) -> dict[str, Tensor]:
        """Run one resolved version in this process (loading it on first use)."""
        served = await self._served(version)
        return await served.infer(inputs, outputs, timeout_ms)

    def _observe(self, event: InferenceEvent) -> None:
        for observer in self.observers:
            try:
                observer(event)
            except Exception:  # monitoring must never fail a request
                log.exception("an inference observer failed")

    def _tell(self, served: ServedRequest) -> None:
        for listener in self.served_listeners:
            try:
                listener(served)
            except Exception:  # metering must never fail a request that was served
                log.exception("a served-request listener failed")

    async def load(self, name: str, ref: str | None = None) -> VersionInfo:
        version = self.resolve(name, ref)
        await self._served(version)
        return version

    def unload(self, name: str, ref: str | None = None) -> VersionInfo:
        version = self.resolve(name, ref)
        self.pool.unload(version.id)
        return version

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every registered version with its serving state, as the V2 repository extension lists them."""
        loaded = {m.key for m in self.pool.loaded()}
        rows = []
        for model in self.registry.list_models():
            for version in self.registry.list_versions(model.name):
                if version.id in loaded:
                    state, reason = "READY", ""
                elif version.health != "healthy":
                    state, reason = "UNAVAILABLE", version.health_reason
                elif version.status != "active":
                    state, reason = "UNAVAILABLE", version.status
                else:
                    state, reason = "UNAVAILABLE", "not loaded"
                if not ready_only or state == "READY":
                    rows.append({"name": model.name, "version": str(version.version), "state": state, "reason": reason})
        return rows

    async def is_ready(self, name: str, ref: str | None = None) -> bool:
        """Ready means loaded, warmed up and healthy. Asking loads the model, as first use would. An
        endpoint is ready when a replica of it is."""
        endpoint = self.endpoint(name, ref)
        if endpoint is not None:
            return endpoint.ready()
        try:
            await self.load(name, ref)
        except NotReady:
            return False
        return True

    def close(self) -> None:
        for loaded in self.pool.loaded():
            self.pool.unload(loaded.key)
        self._executor.shutdown(wait=False, cancel_futures=True)
