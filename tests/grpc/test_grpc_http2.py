"""The gRPC server's own HTTP/2 (stratus.grpc.h2, hpack, server) against clients it did not write: grpcio
(gzip, deadlines, a response far larger than the flow-control windows, errors with metadata) and raw
HTTP/2 frames encoded with the ``hpack`` package (what no gRPC client sends: a tiny window, bad
prefaces, bad header blocks, floods). A real server on a free loopback port, with test handlers."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import hpack
import pytest

from conftest import scaled
from stratus.grpc import inference_pb2 as pb
from stratus.grpc.calls import Call, CallError, Method
from stratus.grpc.h2 import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    frame,
)
from stratus.grpc.hpack import Decoder
from stratus.grpc.server import GrpcServer

LIMIT = 4 * 1024 * 1024  # over the 1 MiB stream window the server announces


async def _big(request: Any, call: Call) -> Any:
    """As many response bytes as the request's model_version says."""
    return pb.ModelInferResponse(
        id=call.metadata.get("x-echo", ""), raw_output_contents=[b"\1" * int(request.model_version)]
    )


async def _size(request: Any, call: Call) -> Any:
    return pb.ModelInferResponse(id=str(len(request.id)))


async def _slow(request: Any, call: Call) -> Any:
    await asyncio.sleep(scaled(30))
    return pb.ServerLiveResponse(live=True)


async def _fail(request: Any, call: Call) -> Any:
    raise CallError("NOT_FOUND", "no model 'ünï%' here", (("stratus-error-kind", "NotFound"),))


METHODS = {
    "/test.S/Big": Method(pb.ModelInferRequest, _big),
    "/test.S/Size": Method(pb.ModelInferRequest, _size),
    "/test.S/Slow": Method(pb.ServerLiveRequest, _slow),
    "/test.S/Fail": Method(pb.ServerLiveRequest, _fail),
}


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    server = GrpcServer(METHODS, LIMIT)
    bound = loop.run_until_complete(server.start("127.0.0.1:0"))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield bound
    asyncio.run_coroutine_threadsafe(server.stop(1), loop).result(scaled(10))
    loop.call_soon_threadsafe(loop.stop)
    thread.join(scaled(10))
    loop.close()


@pytest.fixture(scope="module")
def channel(port: int) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened


def _big_call(channel: grpc.Channel) -> Any:
    return channel.unary_unary(
        "/test.S/Big",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )


def _live_call(channel: grpc.Channel, path: str) -> Any:
    return channel.unary_unary(
        path,
        request_serializer=pb.ServerLiveRequest.SerializeToString,
        response_deserializer=pb.ServerLiveResponse.FromString,
    )


# -- grpcio, a client we did not write ----------------------------------------------------------------


def test_grpcio_gets_a_response_far_larger_than_the_windows(channel: grpc.Channel) -> None:
    size = 3 * 1024 * 1024
    reply = _big_call(channel)(pb.ModelInferRequest(model_version=str(size)), metadata=(("x-echo", "hi"),))
    assert reply.id == "hi" and reply.raw_output_contents[0] == b"\1" * size


def test_grpcio_sends_a_request_far_larger_than_the_windows(channel: grpc.Channel) -> None:
    size = 3 * 1024 * 1024
    call = channel.unary_unary(
        "/test.S/Size",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    assert call(pb.ModelInferRequest(id="x" * size), timeout=scaled(30)).id == str(size)


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_compressed_requests_are_read(channel: grpc.Channel, compression: grpc.Compression) -> None:
    request = pb.ModelInferRequest(model_version="10", id="x" * 20_000)  # compressible, under the limit
    assert _big_call(channel)(request, compression=compression).raw_output_contents[0] == b"\1" * 10


def test_message_over_the_limit_is_resource_exhausted_and_the_channel_still_works(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _big_call(channel)(pb.ModelInferRequest(model_version="1", id="x" * (LIMIT + 10)), timeout=scaled(10))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _big_call(channel)(pb.ModelInferRequest(model_version="1")).raw_output_contents == [b"\1"]


def test_deadline_exceeded_and_errors_carry_status_message_and_metadata(channel: grpc.Channel) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        _live_call(channel, "/test.S/Slow")(pb.ServerLiveRequest(), timeout=0.2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < scaled(10)
    with pytest.raises(grpc.RpcError) as caught:
        _live_call(channel, "/test.S/Fail")(pb.ServerLiveRequest())
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no model 'ünï%' here"
    assert ("stratus-error-kind", "NotFound") in tuple(caught.value.trailing_metadata())
    with pytest.raises(grpc.RpcError) as caught:
        _live_call(channel, "/test.S/Nope")(pb.ServerLiveRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_many_concurrent_calls_on_one_channel(channel: grpc.Channel) -> None:
    futures = [_big_call(channel).future(pb.ModelInferRequest(model_version=str(n))) for n in range(200)]
    assert [len(f.result(timeout=scaled(30)).raw_output_contents[0]) for f in futures] == list(range(200))


# -- raw frames -------------------------------------------------------------------------------------


class Raw:
    """A bare HTTP/2 client: frames in and out, headers through the ``hpack`` package."""

    def __init__(self, port: int, settings: bytes = b"", preface: bytes = PREFACE) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.buffer = b""
        self.sock.sendall(preface + frame(SETTINGS, 0, 0, settings))

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def request(self, stream: int, path: str, message: bytes, content_type: str = "application/grpc") -> None:
        block = self.encoder.encode(
            [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "t"),
             ("content-type", content_type), ("te", "trailers")]
        )  # fmt: skip
        body = b"\0" + struct.pack(">I", len(message)) + message
        self.send(frame(HEADERS, END_HEADERS, stream, block), frame(DATA, END_STREAM, stream, body))

    def read(self) -> tuple[int, int, int, bytes] | None:
        """The next frame, or None once the server has closed the connection."""
        while len(self.buffer) < 9 or len(self.buffer) < 9 + int.from_bytes(self.buffer[:3], "big"):
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        length = int.from_bytes(self.buffer[:3], "big")
        kind, flags, stream = self.buffer[3], self.buffer[4], int.from_bytes(self.buffer[5:9], "big")
        payload, self.buffer = self.buffer[9 : 9 + length], self.buffer[9 + length :]
        return kind, flags, stream, payload

    def until(self, kind: int, stream: int | None = None) -> list[tuple[int, int, int, bytes]]:
        """Frames up to and including the first of ``kind`` (on ``stream``); fails if the server closes."""
        seen = []
        while True:
            got = self.read()
            assert got is not None, f"closed before a frame of type {kind}; got {[f[0] for f in seen]}"
            seen.append(got)
            if got[0] == kind and (stream is None or got[2] == stream):
                return seen

    def headers(self, payload: bytes) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.decoder.decode(payload)}

    def goaway_code(self) -> int:
        while (got := self.read()) is not None:
            if got[0] == GOAWAY:
                return int.from_bytes(got[3][4:8], "big")
        raise AssertionError("closed without GOAWAY")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(port: int) -> Iterator[Raw]:
    client = Raw(port)
    yield client
    client.close()


def test_ping_is_answered_and_a_small_peer_window_holds_the_response_back(port: int) -> None:
    client = Raw(port, settings=struct.pack(">HI", 4, 16))  # SETTINGS_INITIAL_WINDOW_SIZE = 16 bytes
    try:
        client.send(frame(PING, 0, 0, b"12345678"))
        assert client.until(PING)[-1][1:] == (1, 0, b"12345678")  # ACK, same payload
        client.request(1, "/test.S/Big", pb.ModelInferRequest(model_version="100").SerializeToString())
        head = client.until(HEADERS, 1)[-1]
        assert client.headers(head[3])[":status"] == "200" and not head[1] & END_STREAM
        data = client.until(DATA, 1)[-1]
        assert len(data[3]) == 16  # the window, not the whole response
        client.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1000)))
        frames = client.until(HEADERS, 1)
        body = data[3] + b"".join(f[3] for f in frames if f[0] == DATA)
        assert client.headers(frames[-1][3])["grpc-status"] == "0" and frames[-1][1] & END_STREAM
        assert pb.ModelInferResponse.FromString(body[5:]).raw_output_contents == [b"\1" * 100]
    finally:
        client.close()


def test_not_grpc_gets_415_and_the_connection_goes_on(raw: Raw) -> None:
    raw.request(1, "/test.S/Big", b"", content_type="text/plain")
    assert raw.headers(raw.until(HEADERS, 1)[-1][3])[":status"] == "415"
    raw.request(3, "/test.S/Big", pb.ModelInferRequest(model_version="1").SerializeToString())
    frames = raw.until(HEADERS, 3)
    raw.headers(frames[-1][3])  # the response's head
    assert raw.headers(raw.until(HEADERS, 3)[-1][3])["grpc-status"] == "0"


def test_a_message_over_the_limit_is_answered_before_it_ends(raw: Raw) -> None:
    block = raw.encoder.encode(
        [(":method", "POST"), (":scheme", "http"), (":path", "/test.S/Big"), (":authority", "t"),
         ("content-type", "application/grpc")]
    )  # fmt: skip
    raw.send(frame(HEADERS, END_HEADERS, 1, block), frame(DATA, 0, 1, b"\0" + struct.pack(">I", 10**6)))
    for _ in range(LIMIT // 16384 + 2):
        raw.send(frame(DATA, 0, 1, b"\0" * 16384))
    frames = raw.until(RST_STREAM, 1)
    trailers = next(f for f in frames if f[0] == HEADERS)
    assert raw.headers(trailers[3])["grpc-status"] == "8"  # RESOURCE_EXHAUSTED
    raw.send(frame(DATA, END_STREAM, 1, b"\0" * 100))  # the rest of it is dropped, the connection stays
    raw.send(frame(PING, 0, 0, b"abcdefgh"))
    assert raw.until(PING)[-1][3] == b"abcdefgh"


def test_one_connection_holds_at_most_twice_the_message_limit_in_half_sent_requests(raw: Raw) -> None:
    """Fourteen requests of 768 KiB each left unfinished: the server gives window to the first eleven (up to
    8 MiB held, twice the 4 MiB limit) and owes it to the rest until requests end (flow control is how
    HTTP/2 says "not now"); ending four of them pays the debt."""
    block = raw.encoder.encode(
        [(":method", "POST"), (":scheme", "http"), (":path", "/test.S/Size"), (":authority", "t"),
         ("content-type", "application/grpc")]
    )  # fmt: skip
    streams = list(range(1, 29, 2))
    chunk = b"\0" * 16384
    for stream in streams:
        raw.send(frame(HEADERS, END_HEADERS, stream, block), *[frame(DATA, 0, stream, chunk)] * 48)
    raw.send(frame(PING, 0, 0, b"held-all"))
    granted = {f[2] for f in raw.until(PING) if f[0] == WINDOW_UPDATE and f[2]}
    assert granted == set(streams[:11]), sorted(granted)
    raw.send(*[frame(DATA, END_STREAM, stream, b"") for stream in streams[:4]])
    raw.send(frame(PING, 0, 0, b"released"))
    granted = {f[2] for f in raw.until(PING) if f[0] == WINDOW_UPDATE and f[2]}
    assert granted == set(streams[11:]), sorted(granted)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\x0f")], 9),  # no such table index: COMPRESSION_ERROR
        ([frame(HEADERS, 0, 1, b"\x82"), frame(PING, 0, 0, b"\0" * 8)], 1),  # header block interrupted
        ([frame(CONTINUATION, END_HEADERS, 1, b"\x82")], 1),  # CONTINUATION without HEADERS
        ([frame(HEADERS, END_HEADERS, 2, b"\x83")], 1),  # a client opening an even stream
        ([frame(DATA, 0, 1, b"x" * 16385)], 6),  # over the 16 KiB frame size: FRAME_SIZE_ERROR
        ([frame(PING, 0, 0, b"\0" * 8)] * 2500, 11),  # a ping flood: ENHANCE_YOUR_CALM
        ([frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1))], 3),  # window past 2^31-1
    ],
    ids=["bad-hpack", "interrupted", "lone-continuation", "even-stream", "frame-size", "ping-flood", "window"],
)
def test_protocol_errors_close_the_connection_with_goaway(raw: Raw, frames: list[bytes], code: int) -> None:
    raw.send(*frames)
    assert raw.goaway_code() == code


def test_not_http2_is_refused(port: int) -> None:
    client = Raw(port, preface=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert client.goaway_code() == 1  # PROTOCOL_ERROR
        assert client.read() is None  # and closed
    finally:
        client.close()


def test_hpack_decoder_agrees_with_the_hpack_package() -> None:
    rng = random.Random(15)
    encoder, ours = hpack.Encoder(), Decoder(max_list_size=1 << 20)
    names = ["content-type", "authorization", "x-a", "grpc-timeout", ":path", "user-agent", "x-" + "n" * 40]
    for round_ in range(300):
        if round_ % 50 == 25:
            encoder.header_table_size = rng.choice([0, 100, 4096])  # a table size update in the next block
        headers: list[Any] = []
        for _ in range(rng.randint(1, 12)):
            name, value = rng.choice(names), "".join(rng.choice("abcdé ~%/0129") for _ in range(rng.randint(0, 60)))
            sensitive = rng.random() < 0.2
            headers.append(hpack.NeverIndexedHeaderTuple(name, value) if sensitive else (name, value))
        block = encoder.encode(headers, huffman=rng.random() < 0.7)
        assert ours.decode(block) == [(str(n), str(v)) for n, v in headers], round_


def test_stop_lets_a_call_in_flight_finish_and_takes_no_new_ones() -> None:
    loop = asyncio.new_event_loop()
    arrived, release = threading.Event(), asyncio.Event()

    async def held(request: Any, call: Call) -> Any:
        arrived.set()
        await release.wait()
        return pb.ServerLiveResponse(live=True)

    server = GrpcServer({"/test.S/Held": Method(pb.ServerLiveRequest, held)}, LIMIT)
    bound = loop.run_until_complete(server.start("127.0.0.1:0"))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{bound}") as channel:
            in_flight = _live_call(channel, "/test.S/Held").future(pb.ServerLiveRequest(), timeout=scaled(30))
            assert arrived.wait(scaled(30))
            stopping = asyncio.run_coroutine_threadsafe(server.stop(scaled(30)), loop)
            deadline = time.monotonic() + scaled(30)  # the stop runs on the server's loop: wait for its first step
            while server.accepting and time.monotonic() < deadline:
                time.sleep(0.01)
            with grpc.insecure_channel(f"127.0.0.1:{bound}") as late, pytest.raises(grpc.RpcError) as caught:
                _live_call(late, "/test.S/Held")(pb.ServerLiveRequest(), timeout=scaled(5))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert not stopping.done()  # still waiting for the call in flight
            loop.call_soon_threadsafe(release.set)
            assert in_flight.result(scaled(30)).live
            stopping.result(scaled(30))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(scaled(10))
        loop.close()
