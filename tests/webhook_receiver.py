"""A real HTTP receiver on 127.0.0.1 for webhook tests: it records every request and can answer 500 to the
first N of them (a receiver that is down for a while)."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    port: int
    fail_first: int = 0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def wait_for(self, done: Callable[[list[Received]], bool], deadline_s: float) -> list[Received]:
        """Wait until ``done(requests)`` holds; the deadline bounds the wait only."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            seen = self.received()
            if done(seen):
                return seen
            time.sleep(0.05)
        raise AssertionError(f"the receiver did not get what was expected; it got {self.received()}")


@contextmanager
def receiver(fail_first: int = 0, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """The receiver on a free port of 127.0.0.1; with ``tls``, it speaks HTTPS with that server context."""
    state = Receiver(port=0, fail_first=fail_first)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                status = 500 if len(state.requests) < state.fail_first else 200
                state.requests.append(Received(self.path, dict(self.headers.items()), body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
