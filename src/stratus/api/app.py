"""The ASGI application: protocol adapters mounted over one Platform."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from stratus import __version__
from stratus.api import control, endpoints, monitoring, openai, security, training, v1, v2
from stratus.api.encoding import ContentCoding
from stratus.api.errors import install_error_handlers
from stratus.api.fastlane import FastLane
from stratus.api.hosts import HostCheck, allowed_host_values
from stratus.api.limits import BodySizeLimit
from stratus.platform import Platform
from stratus.protocol import TensorLimits
from stratus.settings import Settings

log = logging.getLogger(__name__)

UPLOAD_PATH_SUFFIX = "/versions"
#: The protocol routers that infer; the fast lane serves their inference routes.
INFERENCE_ROUTERS = (v2.router, v1.router, openai.router)


def create_app(
    settings: Settings | None = None,
    platform: Platform | None = None,
    on_started: Callable[[], None] | None = None,
) -> FastAPI:
    settings = settings or (platform.settings if platform else Settings())
    plat = platform or Platform(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not plat.started:
            await run_in_threadpool(plat.start)
        if on_started is not None:
            on_started()
        yield
        plat.close()

    app = FastAPI(
        title="Stratus",
        version=__version__,
        description="Self-hosted Model-as-a-Service: registry, training, compression and inference.",
        lifespan=lifespan,
        # The schema is served by a route that needs a key like any other (see monitoring.py).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.platform = plat
    app.state.tensor_limits = TensorLimits.for_request_bytes(settings.max_request_bytes)
    install_error_handlers(app)

    def limit_for(path: str) -> int:
        if (path.startswith("/api/v1/models/") and path.endswith(UPLOAD_PATH_SUFFIX)) or path == "/api/v1/datasets":
            return settings.max_upload_bytes
        return settings.max_request_bytes

    # Middleware added first runs last: the fast lane sees a request after the host check and the size limit.
    app.add_middleware(FastLane, routers=INFERENCE_ROUTERS)
    app.add_middleware(BodySizeLimit, limit_for=limit_for)
    # Outside the size limit, so the limit counts inflated bytes (a gzip bomb gets 413); see encoding.py.
    app.add_middleware(ContentCoding)
    # Added last, so it runs first: a rebinding request is refused before anything reads its body.
    app.add_middleware(HostCheck, allowed=allowed_host_values(settings.host, settings.port, settings.allowed_hosts))
    for router in INFERENCE_ROUTERS:
        app.include_router(router)
    app.include_router(control.router)
    app.include_router(monitoring.router)
    app.include_router(training.router)
    app.include_router(security.router)
    app.include_router(endpoints.router)
    return app
