"""The ASGI application: protocol adapters mounted over the full server's services (a ControlHost; the
wiring module, stratus.platform, builds one and calls ``build_app``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from stratus import __version__
from stratus.api import (
    alerts,
    automl,
    control,
    devices,
    drift,
    endpoints,
    explain,
    federated,
    inference_log,
    monitoring,
    security,
    training,
)
from stratus.api.edge import CatchAll, StrictJSONBodies, method_not_allowed
from stratus.api.encoding import ContentCoding
from stratus.api.errors import install_error_handlers
from stratus.api.fastlane import FastLane
from stratus.api.host import ControlHost
from stratus.api.hosts import HostCheck, allowed_host_values
from stratus.api.limits import BodySizeLimit
from stratus.api.openapi import truthful_openapi
from stratus.api.routers import INFERENCE_ROUTERS
from stratus.protocol import TensorLimits

log = logging.getLogger(__name__)

UPLOAD_PATH_SUFFIX = "/versions"
#: The web console (stratus.ui, mounted at /ui) forwards /ui/bridge/<API path> to the API in-process, as its session.
CONSOLE_BRIDGE = "/ui/bridge"
#: What ``build_app`` returns, named for callers that import no HTTP framework (stratus.platform).
App = FastAPI


def build_app(plat: ControlHost, on_started: Callable[[], None] | None = None) -> FastAPI:
    settings = plat.settings

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
    app.add_exception_handler(405, method_not_allowed)
    app.openapi = truthful_openapi(app)  # type: ignore[method-assign]

    def limit_for(path: str) -> int:
        path = path.removeprefix(CONSOLE_BRIDGE)  # a console upload gets the API route's own limit
        if (path.startswith("/api/v1/models/") and path.endswith(UPLOAD_PATH_SUFFIX)) or path == "/api/v1/datasets":
            return settings.max_upload_bytes
        return settings.max_request_bytes

    # Middleware added first runs last: the fast lane sees a request after the host check and the size limit.
    app.add_middleware(FastLane, routers=INFERENCE_ROUTERS)
    # Inside the size limit: the JSON gate buffers a body only once the limit has let it through.
    app.add_middleware(StrictJSONBodies)
    app.add_middleware(BodySizeLimit, limit_for=limit_for)
    # Outside the size limit, so the limit counts inflated bytes (a gzip bomb gets 413); see encoding.py.
    app.add_middleware(ContentCoding)
    # Added last, so it runs first: a rebinding request is refused before anything reads its body.
    app.add_middleware(HostCheck, allowed=allowed_host_values(settings.host, settings.port, settings.allowed_hosts))
    # Outermost of ours: an exception from any layer below still gets a 500 and the connection stays usable.
    app.add_middleware(CatchAll)
    for router in INFERENCE_ROUTERS:
        app.include_router(router)
    app.include_router(control.router)
    app.include_router(monitoring.router)
    app.include_router(training.router)
    app.include_router(security.router)
    app.include_router(inference_log.router)
    app.include_router(endpoints.router)
    app.include_router(alerts.router)
    app.include_router(drift.router)
    app.include_router(explain.router)
    app.include_router(devices.router)
    app.include_router(automl.router)
    app.include_router(federated.router)
    return app
