"""An ASGI app behind uvicorn on a free loopback port, in a thread of the test process: a real HTTP server
(sockets, h11, keep-alive) whose app the test can still reach in process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import uvicorn

from conftest import free_port, scaled


def serve(app: object, port: int | None = None) -> Iterator[str]:
    """Yield the server's URL once it listens; stop it when resumed. ``port``: one the app already knows."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + scaled(60)
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(scaled(30))
