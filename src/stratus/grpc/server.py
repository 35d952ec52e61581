"""The gRPC server: unary calls over stratus.grpc.h2's HTTP/2 connections, in the HTTP server's event loop,
started and stopped by the same lifespan as the HTTP app, so one process serves both protocols over one
platform (and the data plane's batcher, which lives on that loop, sees gRPC and REST calls alike).

This module is gRPC over HTTP/2 (the spec's "PROTOCOL-HTTP2"): a call's path names the method, its
metadata are the request headers, one length-prefixed protobuf message (plain, gzip or deflate) each
way, the status in the trailers. Why not grpcio's server: see stratus.grpc.h2.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from stratus.errors import InvalidInput
from stratus.grpc.calls import Call, CallError, Method
from stratus.grpc.h2 import Connection, Stream
from stratus.grpc.hpack import STATUS_200, literal
from stratus.grpc.service import InferenceService
from stratus.hosting import Host
from stratus.protocol import TensorLimits, grpc_number

log = logging.getLogger(__name__)

#: Seconds in-flight calls get to finish when the server stops.
STOP_GRACE_S = 5.0
SERVICE = "inference.GRPCInferenceService"
_CONTENT_TYPE = literal("content-type", "application/grpc")
_HEAD = STATUS_200 + _CONTENT_TYPE
_OK_TRAILER = literal("grpc-status", "0")
_TIMEOUT = re.compile(r"(\d{1,8})([HMSmun])")
_TIMEOUT_UNIT_S = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
#: zlib's window bits for each message encoding a client may send (gRPC's compression spec).
_ENCODINGS = {"gzip": 31, "deflate": 15}
ACCEPT_ENCODING = "identity, deflate, gzip"


def address_of(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return host, int(port)
    except ValueError:
        raise InvalidInput(f"not a host:port address: {address!r}") from None


def _percent_encoded(message: str) -> str:
    """grpc-message is percent-encoded UTF-8: bytes outside printable ASCII, and '%' itself."""
    return "".join(
        chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in message.encode("utf-8", "replace")
    )


def status_block(code: str, message: str, trailing: tuple[tuple[str, str], ...] = (), *, head: bool = True) -> bytes:
    block = (_HEAD if head else b"") + literal("grpc-status", str(grpc_number(code)))
    if message:
        block += literal("grpc-message", _percent_encoded(message))
    for name, value in trailing:
        block += literal(name, value)
    return block


def _http_error(status: int) -> bytes:
    return b"\x08" + bytes([3]) + str(status).encode()  # ":status" (static name 8), a literal value


def _timeout_s(value: str | None) -> float | None:
    match = _TIMEOUT.fullmatch(value) if value else None
    return int(match.group(1)) * _TIMEOUT_UNIT_S[match.group(2)] if match else None


class GrpcServer:
    def __init__(self, methods: dict[str, Method], max_message_bytes: int) -> None:
        self.methods = methods
        self.max_message = max_message_bytes
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, address: str, tls: ssl.SSLContext | None = None) -> int:
        host, port = _split_address(address)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._connection, host or None, port, ssl=tls)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    def _connection(self) -> Connection:
        connection = Connection(
            self._on_request, max_body_bytes=self.max_message + 5, on_close=self._connections.discard
        )
        self._connections.add(connection)
        return connection

    @property
    def accepting(self) -> bool:
        """Whether the port takes new connections (False from the first moment of ``stop``)."""
        return self._server is not None and self._server.is_serving()

    async def stop(self, grace: float) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            connection.goaway()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        for connection in list(self._connections):
            connection.close()
        await self._server.wait_closed()
        self._server = None

    # -- calls ----------------------------------------------------------------------------------

    def _on_request(self, connection: Connection, stream: Stream) -> None:
        """A stream's request has ended (or grown over the limit): answer it, mostly through a task."""
        if stream.too_large:
            message = f"received message larger than max ({self.max_message} bytes)"
            connection.respond_headers_only(stream, status_block("RESOURCE_EXHAUSTED", message))
            return
        pseudo: dict[str, str] = {}
        metadata: dict[str, str] = {}
        for name, value in stream.headers:
            if name.startswith(":"):
                pseudo[name] = value
            elif not name.endswith("-bin"):
                metadata[name] = value
        if pseudo.get(":method") != "POST":
            connection.respond_headers_only(stream, _http_error(405))
            return
        if not metadata.get("content-type", "").startswith("application/grpc"):
            connection.respond_headers_only(stream, _http_error(415))
            return
        method = self.methods.get(pseudo.get(":path", ""))
        if method is None:
            block = status_block("UNIMPLEMENTED", f"method not found: {pseudo.get(':path', '')}")
            connection.respond_headers_only(stream, block)
            return
        task = asyncio.get_running_loop().create_task(
            self._run(connection, stream, method, Call(metadata, connection.peer))
        )
        stream.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, connection: Connection, stream: Stream, method: Method, call: Call) -> None:
        try:
            request = method.request_type.FromString(self._message(bytes(stream.body), call.metadata))
            timeout = _timeout_s(call.metadata.get("grpc-timeout"))
            if timeout is None:
                reply = await method.handler(request, call)
            else:
                async with asyncio.timeout(timeout):
                    reply = await method.handler(request, call)
            body: bytes = reply.SerializeToString()
            if len(body) >= 1 << 32:
                raise CallError("RESOURCE_EXHAUSTED", "the response is larger than a gRPC message can be")
            connection.respond(stream, _HEAD, b"\0" + len(body).to_bytes(4, "big") + body, _OK_TRAILER)
        except CallError as exc:
            connection.respond_headers_only(stream, status_block(exc.code, exc.message, exc.trailing))
        except TimeoutError:
            connection.respond_headers_only(stream, status_block("DEADLINE_EXCEEDED", "Deadline Exceeded"))
        except asyncio.CancelledError:
            pass  # the peer reset the stream or went away: there is no one to answer
        except Exception:
            log.exception("gRPC call %s failed", method.handler)
            block = status_block("INTERNAL", "internal server error; see the server log")
            connection.respond_headers_only(stream, block)

    def _message(self, body: bytes, metadata: dict[str, str]) -> bytes:
        """The one length-prefixed message of a unary call's request, decompressed."""
        if len(body) < 5 or int.from_bytes(body[1:5], "big") != len(body) - 5:
            raise CallError("INVALID_ARGUMENT", "a unary call takes exactly one request message")
        if not body[0]:
            return body[5:]
        encoding = metadata.get("grpc-encoding", "identity")
        wbits = _ENCODINGS.get(encoding)
        if wbits is None:
            refusal = f"message encoding {encoding!r} is not supported; use one of: {ACCEPT_ENCODING}"
            raise CallError("UNIMPLEMENTED", refusal, (("grpc-accept-encoding", ACCEPT_ENCODING),))
        inflater = zlib.decompressobj(wbits)
        try:
            message = inflater.decompress(body[5:], self.max_message + 1)
        except zlib.error:
            raise CallError("INVALID_ARGUMENT", f"the request message is not valid {encoding}") from None
        if len(message) > self.max_message:
            raise CallError("RESOURCE_EXHAUSTED", f"received message larger than max ({self.max_message} bytes)")
        return message


async def start_grpc(
    host: Host,
    address: str,
    *,
    max_message_bytes: int,
    tls: tuple[Path, Path] | None = None,
) -> tuple[GrpcServer, int]:
    """Serve ``host`` over gRPC on ``address`` ("127.0.0.1:8081"; port 0 picks one). Returns the server and
    its port. A message over ``max_message_bytes`` is refused (RESOURCE_EXHAUSTED), like the HTTP body
    limit's 413."""
    service = InferenceService(host, TensorLimits.for_request_bytes(max_message_bytes))
    server = GrpcServer(service.methods(SERVICE), max_message_bytes)
    context = None
    if tls is not None:
        cert, key = tls
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["h2"])
    try:
        port = await server.start(address, context)
    except OSError as exc:
        raise InvalidInput(
            f"cannot serve gRPC on {address}: {exc.strerror or exc} (is the port in use?): choose another with "
            "--grpc-port, or 0 to serve no gRPC"
        ) from None
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
