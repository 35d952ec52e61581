"""HTTP/2 (RFC 9113) as unary gRPC calls use it, as an asyncio protocol on the server's event loop.

Why not grpcio's server: measured on this project's 2-core machine, a grpc.aio server answering a fixed
message with no work at all costs 157-186 us of CPU per call, more than a whole V2 REST inference request
through uvicorn (137 us), so gRPC could never serve as many calls as REST (docs/benchmarks.md). This
connection does what a unary call needs - streams, HPACK, flow control both ways, SETTINGS, PING,
RST_STREAM, GOAWAY - and nothing else (no server push, no priorities), with limits on everything a peer
controls: concurrent streams, header list size, a message's size, and frames that would make the server
do work without a call behind it. Calls that arrive in one read are handed over in the same loop turn, so
the data plane batches them as it batches REST requests.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from stratus.grpc.hpack import CompressionError, Decoder, Header

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 5, 6, 7, 8, 9, 0xB
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE = 1, 2, 3, 4
S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = 5, 6

_FRAME = struct.Struct(">BHBBL")  # length (24 bits, as 8 + 16), type, flags, stream id
_MAX_WINDOW = 2**31 - 1
MAX_FRAME_SIZE = 16384  # what we accept: the protocol's default, so there is nothing to announce
STREAM_WINDOW = 1 << 20  # per stream, announced in our SETTINGS
CONNECTION_WINDOW = 1 << 24
MAX_HEADER_LIST = 16384
#: Seconds a new connection has to send the HTTP/2 preface before it is closed (an idle socket that never
#: speaks holds a file descriptor for nothing).
PREFACE_TIMEOUT_S = 20.0
#: Frames a peer may send that cost us work but carry no call (PING, SETTINGS, GOAWAY, empty DATA, resets
#: of streams it opened a moment before): a bucket of this many, refilled at this rate per second; a peer
#: that empties it is closed (ENHANCE_YOUR_CALM), as grpc-core and nghttp2 do with ping and reset floods.
IDLE_FRAME_BURST = 2000.0
IDLE_FRAMES_PER_S = 1000.0


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return _FRAME.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id) + payload


class H2Error(Exception):
    """An HTTP/2 connection error: the connection is closed with GOAWAY and this code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(eq=False, slots=True)
class Stream:
    id: int
    headers: list[Header]
    body: bytearray = field(default_factory=bytearray)
    recv_window: int = STREAM_WINDOW
    send_window: int = 0
    ended: bool = False  # the peer sent END_STREAM: the request is complete
    too_large: bool = False
    #: What waits for flow-control window: the rest of the response and the trailers that end it.
    pending: memoryview | None = None
    trailer: bytes = b""
    task: asyncio.Task[None] | None = None


#: Called with the connection and a stream whose request is complete (or over the size limit).
OnRequest = Callable[["Connection", Stream], None]


class Connection(asyncio.Protocol):
    """One client connection. ``on_request`` gets each stream once its request has ended; the server
    answers with ``respond`` (or ``respond_headers_only``)."""

    def __init__(
        self,
        on_request: OnRequest,
        *,
        max_body_bytes: int,
        max_streams: int = 128,
        on_close: Callable[[Connection], None] | None = None,
    ) -> None:
        self.on_request = on_request
        self.on_close = on_close
        self.max_body = max_body_bytes
        self.max_streams = max_streams
        # Request bytes this connection may hold in streams still being received before the streams other
        # than the oldest get no more window: without it one connection could hold max_streams whole
        # messages (128 x 64 MiB) half-sent. The oldest always gets window, so a client that sends
        # several large messages at once still finishes them, one after another.
        self.max_held = 2 * max_body_bytes
        self._held = 0  # bytes in the bodies of streams whose request has not ended
        self._starved: dict[int, Stream] = {}  # streams owed a window update until _held falls
        self.streams: dict[int, Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self._buffer = bytearray()
        self._preface = False
        self._decoder = Decoder(max_list_size=MAX_HEADER_LIST)
        self._last_id = 0
        self._headers_of: tuple[int, int, bytearray] | None = None  # stream, flags, block being continued
        self._send_window = 65535
        self._peer_initial_window = 65535
        self._peer_max_frame = 16384
        self._recv_window = CONNECTION_WINDOW
        self._unacked = 0  # bytes received on the connection not yet given back with WINDOW_UPDATE
        self._blocked: dict[int, Stream] = {}
        self._paused = False
        self._closing = False  # closed or closing: nothing more is read
        self._draining = False  # GOAWAY sent: no new streams, the open ones go on
        self._idle_budget = IDLE_FRAME_BURST
        self._idle_at = time.monotonic()

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            host, port = peer[0], peer[1]
            self.peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        settings = struct.pack(
            ">HIHIHIHI",
            S_MAX_CONCURRENT_STREAMS, self.max_streams,
            S_INITIAL_WINDOW_SIZE, STREAM_WINDOW,
            S_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST,
            S_ENABLE_PUSH, 0,
        )  # fmt: skip
        raise_window = struct.pack(">I", CONNECTION_WINDOW - 65535)
        self.transport.write(frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, raise_window))
        asyncio.get_running_loop().call_later(PREFACE_TIMEOUT_S, self._check_preface)

    def _check_preface(self) -> None:
        if not self._preface:
            self.close(PROTOCOL_ERROR, "no HTTP/2 preface in time")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        for stream in self.streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self.streams.clear()
        self._blocked.clear()
        self._starved.clear()
        if self.on_close is not None:
            self.on_close(self)

    def pause_writing(self) -> None:
        # The peer does not read what we send: stop reading what it sends (it could pile up PING
        # answers, or responses, without bound).
        self._paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        try:
            if not self._preface:
                if len(buffer) < len(PREFACE):
                    if not PREFACE.startswith(bytes(buffer)):
                        raise H2Error(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    return
                if buffer[: len(PREFACE)] != PREFACE:
                    raise H2Error(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                del buffer[: len(PREFACE)]
                self._preface = True
            pos, end = 0, len(buffer)
            while end - pos >= 9 and not self._closing:
                high, low, kind, flags, stream_id = _FRAME.unpack_from(buffer, pos)
                length = high << 16 | low
                if length > MAX_FRAME_SIZE:
                    raise H2Error(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                if end - pos - 9 < length:
                    break
                payload = bytes(buffer[pos + 9 : pos + 9 + length])
                pos += 9 + length
                self._frame(kind, flags, stream_id & 0x7FFFFFFF, payload)
            del buffer[:pos]
        except H2Error as exc:
            self.close(exc.code, str(exc))

    # -- frames in -------------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._headers_of is not None and (kind != CONTINUATION or stream_id != self._headers_of[0]):
            raise H2Error(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif kind == RST_STREAM:
            self._rst_stream(stream_id, payload)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == PING:
            if stream_id or len(payload) != 8:
                raise H2Error(PROTOCOL_ERROR, "bad PING")
            if not flags & ACK:
                self._idle()
                self._write(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            # The peer will open no more streams; the ones it has open still get their answers.
            self._idle()
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == PUSH_PROMISE:
            raise H2Error(PROTOCOL_ERROR, "a client cannot push")
        # PRIORITY and unknown frame types are ignored (RFC 9113 5.5).

    def _idle(self) -> None:
        now = time.monotonic()
        budget = min(IDLE_FRAME_BURST, self._idle_budget + (now - self._idle_at) * IDLE_FRAMES_PER_S) - 1
        self._idle_budget, self._idle_at = budget, now
        if budget < 0:
            raise H2Error(ENHANCE_YOUR_CALM, "too many frames without a call")

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise H2Error(PROTOCOL_ERROR, "bad padding")
            return payload[1 : len(payload) - payload[0]]
        return payload

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise H2Error(PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise H2Error(PROTOCOL_ERROR, "bad HEADERS priority")
            block = block[5:]
        if flags & END_HEADERS:
            self._header_block(flags, stream_id, block)
        else:
            self._headers_of = (stream_id, flags, bytearray(block))

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._headers_of is None:
            raise H2Error(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        _, first_flags, block = self._headers_of
        block += payload
        if len(block) > 4 * MAX_HEADER_LIST:
            raise H2Error(ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            self._headers_of = None
            self._header_block(first_flags, stream_id, bytes(block))

    def _header_block(self, flags: int, stream_id: int, block: bytes) -> None:
        try:
            headers = self._decoder.decode(block)  # always, to keep the table in step with the peer's
        except CompressionError as exc:
            raise H2Error(COMPRESSION_ERROR, exc.message) from None
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client: gRPC sends none, but they end the request
            if stream.ended or not flags & END_STREAM:
                raise H2Error(PROTOCOL_ERROR, "HEADERS on a stream whose headers came")
            self._end(stream)
            return
        if stream_id <= self._last_id or not stream_id & 1:
            if stream_id & 1:  # a stream that was closed: its request is over
                self._write(frame(RST_STREAM, 0, stream_id, struct.pack(">I", STREAM_CLOSED)))
                return
            raise H2Error(PROTOCOL_ERROR, f"stream {stream_id} cannot be opened by a client")
        self._last_id = stream_id
        if self._draining or len(self.streams) >= self.max_streams:
            self._write(frame(RST_STREAM, 0, stream_id, struct.pack(">I", REFUSED_STREAM)))
            return
        stream = Stream(stream_id, headers, send_window=self._peer_initial_window)
        self.streams[stream_id] = stream
        if flags & END_STREAM:
            self._end(stream)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise H2Error(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._recv_window -= size
        if self._recv_window < 0:
            raise H2Error(FLOW_CONTROL_ERROR, "DATA past the connection's window")
        self._unacked += size
        if self._unacked >= CONNECTION_WINDOW // 2:
            self._write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._unacked)))
            self._recv_window += self._unacked
            self._unacked = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.ended:
            if stream_id > self._last_id:
                raise H2Error(PROTOCOL_ERROR, f"DATA on stream {stream_id}, never opened")
            return  # a stream answered early (a message over the limit) or reset: its data is dropped
        if not size:
            self._idle()
        stream.recv_window -= size
        if stream.recv_window < 0:
            raise H2Error(FLOW_CONTROL_ERROR, f"DATA past stream {stream_id}'s window")
        data = self._unpad(flags, payload)
        if not stream.too_large:
            if len(stream.body) + len(data) > self.max_body:
                self._release(stream)
                stream.too_large, stream.body = True, bytearray()
                self.on_request(self, stream)  # answered now; the rest of its data is dropped
            else:
                stream.body += data
                self._held += len(data)
        if flags & END_STREAM:
            self._end(stream)
        elif stream.recv_window <= STREAM_WINDOW // 2 and not stream.too_large:
            if self._held <= self.max_held or stream.id == self._oldest_open():
                self._grant(stream)
            else:
                self._starved[stream.id] = stream

    def _grant(self, stream: Stream) -> None:
        grant = STREAM_WINDOW - stream.recv_window
        stream.recv_window = STREAM_WINDOW
        self._write(frame(WINDOW_UPDATE, 0, stream.id, struct.pack(">I", grant)))

    def _oldest_open(self) -> int:
        return min((s.id for s in self.streams.values() if not s.ended and not s.too_large), default=0)

    def _release(self, stream: Stream) -> None:
        """``stream`` holds no more request bytes (ended, reset or over the limit): window owed to others
        is granted, oldest first, while the connection holds no more than ``max_held``."""
        self._held -= len(stream.body)
        self._starved.pop(stream.id, None)
        while self._starved and not self._closing:
            oldest = min(self._starved)
            if self._held > self.max_held and oldest != self._oldest_open():
                break
            self._grant(self._starved.pop(oldest))

    def _end(self, stream: Stream) -> None:
        stream.ended = True
        if not stream.too_large:
            self._release(stream)
            self.on_request(self, stream)

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        if not stream_id or len(payload) != 4:
            raise H2Error(PROTOCOL_ERROR, "bad RST_STREAM")
        stream = self.streams.pop(stream_id, None)
        self._blocked.pop(stream_id, None)
        if stream is not None and not stream.ended:
            self._release(stream)
        if stream is not None and stream.task is not None and not stream.task.done():
            stream.task.cancel()
            self._idle()  # opening streams only to reset them is the "rapid reset" attack

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise H2Error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise H2Error(FRAME_SIZE_ERROR, "SETTINGS length")
        self._idle()
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == S_INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise H2Error(FLOW_CONTROL_ERROR, "initial window too large")
                delta, self._peer_initial_window = value - self._peer_initial_window, value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == S_MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise H2Error(PROTOCOL_ERROR, "bad max frame size")
                self._peer_max_frame = value
            elif key == S_ENABLE_PUSH and value > 1:
                raise H2Error(PROTOCOL_ERROR, "bad enable push")
            # The peer's header table size needs nothing: our responses never index.
        self._write(frame(SETTINGS, ACK, 0))
        self._flush_blocked()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
        increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
        if not increment:
            raise H2Error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        if not stream_id:
            self._send_window += increment
            if self._send_window > _MAX_WINDOW:
                raise H2Error(FLOW_CONTROL_ERROR, "connection window too large")
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                return
            stream.send_window += increment
            if stream.send_window > _MAX_WINDOW:
                raise H2Error(FLOW_CONTROL_ERROR, "stream window too large")
        self._flush_blocked()

    # -- frames out ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def respond(self, stream: Stream, head: bytes, body: bytes, trailer: bytes) -> None:
        """Answer ``stream``: the header block ``head``, ``body`` as DATA (flow-controlled), then the
        header block ``trailer`` ending the stream. Blocks are single frames (they are small)."""
        if self.streams.get(stream.id) is not stream:
            return  # reset by the peer, or the connection is gone
        out = [frame(HEADERS, END_HEADERS, stream.id, head)]
        stream.pending, stream.trailer = memoryview(body), trailer
        self._send_pending(stream, out)
        self._write(b"".join(out))

    def respond_headers_only(self, stream: Stream, block: bytes) -> None:
        """Answer ``stream`` with one header block that ends it (gRPC's Trailers-Only response)."""
        if self.streams.get(stream.id) is not stream:
            return
        out = frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block)
        if not stream.ended:  # answered before its request ended (too large): tell the peer to stop
            out += frame(RST_STREAM, 0, stream.id, struct.pack(">I", NO_ERROR))
        self._write(out)
        self._forget(stream)

    def _send_pending(self, stream: Stream, out: list[bytes]) -> None:
        pending = stream.pending
        assert pending is not None
        while pending:
            size = min(len(pending), self._send_window, stream.send_window, self._peer_max_frame)
            if size <= 0:
                stream.pending = pending
                self._blocked[stream.id] = stream
                return
            out.append(frame(DATA, 0, stream.id, bytes(pending[:size])))
            pending = pending[size:]
            self._send_window -= size
            stream.send_window -= size
        out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, stream.trailer))
        self._blocked.pop(stream.id, None)
        self._forget(stream)

    def _flush_blocked(self) -> None:
        if not self._blocked:
            return
        out: list[bytes] = []
        for stream in list(self._blocked.values()):
            if self._send_window <= 0:
                break
            self._send_pending(stream, out)
        if out:
            self._write(b"".join(out))

    def _forget(self, stream: Stream) -> None:
        stream.pending = None
        if not stream.ended:
            stream.ended = True
            if not stream.too_large:
                self._release(stream)
        self.streams.pop(stream.id, None)

    def goaway(self, code: int = NO_ERROR, message: str = "") -> None:
        """No new streams: the ones open are still answered."""
        self._draining = True
        self._write(frame(GOAWAY, 0, 0, struct.pack(">II", self._last_id, code) + message.encode()[:256]))

    def close(self, code: int = NO_ERROR, message: str = "") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.goaway(code, message)
        self._closing = True
        self.transport.close()
