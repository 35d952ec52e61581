"""The single-endpoint server: the inference protocols (V2, V1, OpenAI) and /metrics over one endpoint
bundle, with no metadata database. Replicas run it, and so do exported containers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from stratus import __version__
from stratus.api import monitoring
from stratus.api.edge import CatchAll, method_not_allowed
from stratus.api.encoding import ContentCoding
from stratus.api.errors import install_error_handlers
from stratus.api.fastlane import FastLane
from stratus.api.hosts import HostCheck
from stratus.api.limits import BodySizeLimit
from stratus.api.routers import INFERENCE_ROUTERS
from stratus.dataplane import DataPlane
from stratus.deploy.bundle import BundleCatalog
from stratus.deploy.local import BundledEndpoint
from stratus.protocol import TensorLimits
from stratus.security.access import SingleKeyAccess


class _NoAudit:
    """This mode has no control plane to audit: model load/unload is all it allows."""

    def record(self, *args: object) -> None:
        pass


@dataclass
class EndpointHost:
    """What the protocol adapters need from a platform (see stratus.api.deps), without a database."""

    dataplane: DataPlane
    access: SingleKeyAccess
    audit: _NoAudit = field(default_factory=_NoAudit)
    started: bool = False


def create_endpoint_app(
    catalog: BundleCatalog, *, key_sha256: str | None, threads: int, max_request_bytes: int = 64 * 1024 * 1024
) -> FastAPI:
    plane = DataPlane(catalog, threads=threads)
    plane.endpoints = BundledEndpoint(catalog, plane)
    host = EndpointHost(plane, SingleKeyAccess(key_sha256))

    async def warm_up() -> None:
        for route in catalog.routes:
            await plane.load(route.model, str(route.version))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await warm_up()
        host.started = True
        yield
        await run_in_threadpool(plane.close)

    app = FastAPI(
        title=f"Stratus endpoint {catalog.endpoint}",
        version=__version__,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.platform = host
    app.state.tensor_limits = TensorLimits.for_request_bytes(max_request_bytes)
    install_error_handlers(app)
    app.add_middleware(FastLane, routers=INFERENCE_ROUTERS)
    app.add_middleware(BodySizeLimit, limit_for=lambda _path: max_request_bytes)
    app.add_middleware(ContentCoding)
    # No Host list here (an exported endpoint is reached by any name), but repeated framing headers are refused.
    app.add_middleware(HostCheck, allowed=None)
    app.add_middleware(CatchAll)  # a crash still answers 500 and keeps the connection (see edge.py)
    app.add_exception_handler(405, method_not_allowed)
    for router in (*INFERENCE_ROUTERS, monitoring.router):
        app.include_router(router)
    return app
