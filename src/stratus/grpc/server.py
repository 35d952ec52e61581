"""The gRPC server: a grpc.aio server in the HTTP server's event loop, started and stopped by the same
lifespan as the HTTP app, so one process serves both protocols over one platform."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from stratus.errors import InvalidInput
from stratus.grpc.inference_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from stratus.grpc.service import InferenceService
from stratus.hosting import Host
from stratus.protocol import TensorLimits

#: Seconds in-flight calls get to finish when the server stops.
STOP_GRACE_S = 5.0


def address_of(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_grpc(
    host: Host,
    address: str,
    *,
    max_message_bytes: int,
    tls: tuple[Path, Path] | None = None,
) -> tuple[aio.Server, int]:
    """Serve ``host`` over gRPC on ``address`` ("127.0.0.1:8081"; port 0 picks one). Returns the server and
    its port. A message over ``max_message_bytes`` is refused by gRPC itself (RESOURCE_EXHAUSTED), like
    the HTTP body limit's 413."""
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            # One process owns the port: a second server must not silently share it.
            ("grpc.so_reuseport", 0),
        ]
    )
    service = InferenceService(host, TensorLimits.for_request_bytes(max_message_bytes))
    add_GRPCInferenceServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    try:
        if tls is not None:
            cert, key = tls
            credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        port, reason = 0, f": {exc}"
    else:
        reason = ""
    if not port:
        raise InvalidInput(
            f"cannot serve gRPC on {address}{reason} (is the port in use?): choose another with --grpc-port, "
            "or 0 to serve no gRPC"
        )
    await server.start()
    return server, port


Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def with_grpc(
    lifespan: Lifespan,
    host: Host,
    address: str,
    *,
    max_message_bytes: int,
    tls: tuple[Path, Path] | None = None,
) -> Lifespan:
    """``lifespan`` (an ASGI app's) that also serves gRPC while the app runs: started once the app has
    started (the platform is migrated and ready), stopped before the app stops."""

    @asynccontextmanager
    async def both(app: Any) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            server, _port = await start_grpc(host, address, max_message_bytes=max_message_bytes, tls=tls)
            try:
                yield state
            finally:
                await server.stop(STOP_GRACE_S)

    return both
