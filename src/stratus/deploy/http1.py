"""A small HTTP/1.1 client for the router's calls to its own replicas on loopback.

Why not httpx: its request went out in two writes (headers, then body), which Nagle's algorithm and
delayed ACKs turn into a 40 ms stall per request (measured: 22 req/s at concurrency 1). Here each request
is one write on a TCP_NODELAY socket over a keep-alive connection, and a response is read by its
Content-Length (or chunks). Only what a Stratus replica sends is understood; nothing else is its peer.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

#: Idle connections older than this are closed rather than reused (replicas keep them for 75 s).
IDLE_LIMIT_S = 30.0
MAX_IDLE_PER_REPLICA = 64
MAX_RESPONSE_BYTES = 512 * 1024 * 1024


class ConnectionFailed(Exception):
    """The replica could not be reached, or the connection broke before a whole response arrived."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used_at: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def _connect(host: str, port: int) -> _Connection:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        raise ConnectionFailed(f"cannot connect to {host}:{port}: {exc}") from None
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _Connection(reader, writer)


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    status_line = await reader.readline()
    if not status_line:
        raise asyncio.IncompleteReadError(b"", None)
    parts = status_line.split(b" ", 2)
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        total = 0
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            total += size
            if total > MAX_RESPONSE_BYTES:
                raise ConnectionFailed("a replica's response is too large")
            chunks.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(chunks)
    else:
        length = int(headers.get("content-length", "0"))
        if length > MAX_RESPONSE_BYTES:
            raise ConnectionFailed("a replica's response is too large")
        body = await reader.readexactly(length)
    keep = headers.get("connection", "").lower() != "close"
    return Response(status, headers, body), keep


class ReplicaConnections:
    """Keep-alive connections to one replica, for one event loop."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[_Connection] = []

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.used_at < IDLE_LIMIT_S and not connection.reader.at_eof():
                return connection
            connection.close()
        return None

    async def post(self, path: str, headers: dict[str, str], body: bytes, timeout_s: float) -> Response:
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        connection = self._take_idle()
        reused = connection is not None
        for _ in range(2):
            if connection is None:
                connection = await _connect(self.host, self.port)
            try:
                async with asyncio.timeout(timeout_s):
                    connection.writer.write(request)
                    await connection.writer.drain()
                    response, keep = await _read_response(connection.reader)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                connection.close()
                connection = None
                if reused:  # the replica may have closed an idle connection: one fresh try
                    reused = False
                    continue
                raise ConnectionFailed(f"the connection to {self.host}:{self.port} broke: {exc!r}") from None
            connection.used_at = time.monotonic()
            if keep and len(self._idle) < MAX_IDLE_PER_REPLICA:
                self._idle.append(connection)
            else:
                connection.close()
            return response
        raise ConnectionFailed(f"the connection to {self.host}:{self.port} broke")

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
