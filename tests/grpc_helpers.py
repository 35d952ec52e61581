"""An in-process app that also serves gRPC on a free loopback port, started by the app's lifespan exactly as
`stratus serve` starts it (stratus.grpc.server.with_grpc)."""

from __future__ import annotations

from fastapi import FastAPI

from conftest import free_port
from stratus.grpc.server import with_grpc


def serve_grpc(app: FastAPI) -> str:
    """Make ``app``'s lifespan serve gRPC too; returns the address ("127.0.0.1:PORT") to dial once it runs."""
    platform = app.state.platform
    address = f"127.0.0.1:{free_port()}"
    app.router.lifespan_context = with_grpc(
        app.router.lifespan_context, platform, address, max_message_bytes=platform.settings.max_request_bytes
    )
    return address


def metadata(key: str) -> dict[str, str]:
    """The API key as tritonclient.grpc sends headers: gRPC metadata."""
    return {"authorization": f"Bearer {key}"}
