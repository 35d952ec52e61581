"""gzip and deflate content codings: compressed request bodies in, compressed responses out.

Triton's clients send ``Content-Encoding: gzip`` or ``deflate`` when asked to (``request_compression_algorithm``)
and ask for a compressed answer with ``Accept-Encoding``. This middleware sits outside the body size limit
(``limits.py``), so the limit counts the DECOMPRESSED bytes and a compression bomb is refused with 413 after at
most the limit plus one chunk has been inflated: the body is inflated incrementally, ``CHUNK`` bytes of output per
read, never all at once. The fast lane and every handler see a plain body without ``Content-Encoding``.

A request with neither header costs one pass over its headers. Responses are compressed only when they are
sent in one piece (not streams such as job events) and are at least ``minimum_size`` bytes; small answers
(one iris prediction) gain nothing from it.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratus.api.hosts import refuse
from stratus.errors import InvalidInput

#: Most bytes of inflated body handed on per read: what bounds memory before the size limit can count it.
CHUNK = 64 * 1024
#: Responses at least this large are compressed for a client that asks.
MINIMUM_SIZE = 1024
#: Compressing a larger response runs in a worker thread, so it does not hold up the event loop.
THREAD_THRESHOLD = 1024 * 1024
#: zlib level 1: most of the gain for a fraction of the CPU; the CPU is better spent on inference.
LEVEL = 1

_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
_COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda body: gzip.compress(body, compresslevel=LEVEL, mtime=0),
    "deflate": lambda body: zlib.compress(body, LEVEL),
}


def response_coding(accept: bytes) -> str | None:
    """The coding to answer with for an ``Accept-Encoding`` value: gzip, else deflate, else none."""
    offered: dict[str, float] = {}
    for item in accept.decode("latin-1").lower().split(","):
        name, _, params = item.strip().partition(";")
        quality = 1.0
        key, _, value = params.strip().partition("=")
        if key.strip() == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
        offered[name.strip()] = quality
    for coding in ("gzip", "deflate"):
        if offered.get(coding, 0.0) > 0:
            return coding
    return None


def decoding_receive(receive: Receive, coding: bytes) -> Receive:
    """``receive`` with its body inflated, at most CHUNK bytes per message."""
    decoder = zlib.decompressobj(_WBITS[coding])
    tail = b""
    upstream_done = False
    finished = False
    name = coding.decode()

    def inflate(data: bytes) -> bytes:
        try:
            return decoder.decompress(data, CHUNK)
        except zlib.error as exc:
            raise InvalidInput(f"the request body is not valid {name} data: {exc}") from None

    async def receive_decoded() -> Message:
        nonlocal tail, upstream_done, finished
        if finished:
            return await receive()
        while True:
            if tail:
                out = inflate(tail)
                tail = decoder.unconsumed_tail
                if out:
                    return {"type": "http.request", "body": out, "more_body": True}
            elif upstream_done:
                if not decoder.eof:
                    raise InvalidInput(f"the {name} request body is truncated")
                if decoder.unused_data:
                    raise InvalidInput(f"the request body has data after the end of its {name} stream")
                finished = True
                return {"type": "http.request", "body": b"", "more_body": False}
            else:
                message = await receive()
                if message["type"] != "http.request":
                    return message
                tail = message.get("body", b"")
                upstream_done = not message.get("more_body", False)
                if decoder.eof and tail:
                    raise InvalidInput(f"the request body has data after the end of its {name} stream")

    return receive_decoded


class _CompressingSend:
    """Holds the response start until the first body message says whether the response comes in one piece."""

    def __init__(self, send: Send, coding: str) -> None:
        self._send = send
        self._coding = coding
        self._start: Message | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start = message
            return
        start, self._start = self._start, None
        if start is None:
            await self._send(message)
            return
        body: bytes = message.get("body", b"")
        headers = MutableHeaders(raw=list(start["headers"]))
        if message.get("more_body", False) or len(body) < MINIMUM_SIZE or "content-encoding" in headers:
            await self._send(start)
            await self._send(message)
            return
        compress = _COMPRESS[self._coding]
        packed = await run_in_threadpool(compress, body) if len(body) > THREAD_THRESHOLD else compress(body)
        headers["Content-Encoding"] = self._coding
        headers["Content-Length"] = str(len(packed))
        headers.add_vary_header("Accept-Encoding")
        await self._send({**start, "headers": headers.raw})
        await self._send({"type": "http.response.body", "body": packed})


class ContentCoding:
    """ASGI middleware: inflates gzip/deflate request bodies and compresses responses for clients that ask."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        coding = accept = None
        for key, value in scope["headers"]:
            if key == b"content-encoding":
                coding = value
            elif key == b"accept-encoding":
                accept = value
        if coding is None and accept is None:
            await self.app(scope, receive, send)
            return
        if coding is not None:
            coding = coding.strip().lower()
            if coding in _WBITS:
                # The declared length is the compressed one; what the handlers read has no known length.
                headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")]
                scope = {**scope, "headers": headers}
                receive = decoding_receive(receive, coding)
            elif coding != b"identity":
                await refuse(
                    send,
                    415,
                    f"Content-Encoding {coding.decode('latin-1')!r} is not supported: send gzip, deflate or identity",
                )
                return
        chosen = response_coding(accept) if accept is not None else None
        await self.app(scope, receive, _CompressingSend(send, chosen) if chosen is not None else send)


__all__ = ["CHUNK", "ContentCoding", "decoding_receive", "response_coding"]
