"""The server side's transport: a Flower ``Grid`` whose nodes are Stratus federation clients reached over gRPC.

Flower's ServerApp (its workflows, SecAgg+, strategies) drives the federation through a ``Grid``: push messages to
nodes, pull their replies. Flower 1.42's own SuperLink serves nodes over an HTTP Fleet API built on the FastAPI,
Starlette and uvicorn releases it pins, which are not the ones the platform runs (docs/federated.md, "Install"), so
this module is the Grid: it keeps each node's queue of Flower messages and serves them on a gRPC service bound to
loopback by default. What crosses the wire is Flower's own protobuf (``flwr.common.serde.message_to_proto``).

Every call carries ``authorization: Bearer <client token>``: an HMAC of the job id and the client's name under the
job's secret, which the Stratus server issues at ``join`` to a ``federated`` key bound to this job. A call without
one, or with another job's, is refused (UNAUTHENTICATED); a second live session of the same client name is refused
(ALREADY_EXISTS). A node that stops polling for ``node_timeout`` seconds is gone: Flower's workflows see it leave
and the round goes on with the rest (SecAgg+ recovers a dropped client's masks from the others' shares).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from flwr.app import Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run

SERVICE = "stratus.federated.Relay"
#: How long a node may go silent before it counts as dropped: clients poll, and ping while they compute, every
#: fraction of a second (HEARTBEAT), so only a dead or cut-off client goes silent this long.
NODE_TIMEOUT = 5.0
HEARTBEAT = 0.25
#: Largest message either way: a CNN's weights are a few MB; SecAgg+ adds shares, not copies.
MAX_MESSAGE = 64 * 1024 * 1024

#: Told of every message a node sent to the server: (node's client name, the Flower message). The tests use it to
#: check what the ServerApp received; the job child uses it for nothing else.
Observer = Callable[[str, Message], None]


def client_token(secret: bytes, job_id: str, client: str) -> str:
    """The credential a client presents: bound to one job and one client name, made by the Stratus server."""
    return hmac.new(secret, f"{job_id}\n{client}".encode(), hashlib.sha256).hexdigest()


@dataclass
class _Node:
    node_id: int
    client: str
    session: str
    seen: float
    inbox: list[Message] = field(default_factory=list)


class RelayGrid(Grid):
    """A Flower Grid over the nodes that joined through :class:`RelayServicer`."""

    def __init__(self, node_timeout: float = NODE_TIMEOUT, observers: Iterable[Observer] = ()) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[int, _Node] = {}
        self._replies: dict[str, Message] = {}
        self._run = Run.create_empty(run_id=1)
        self.node_timeout = node_timeout
        self.observers = list(observers)
        self.joined: set[str] = set()
        self.dropped: set[str] = set()

    # -- Grid -------------------------------------------------------------------------------------

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        self._expire()
        with self._lock:
            return list(self._nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        with self._lock:
            for message in messages:
                message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
                message.metadata.__dict__["_run_id"] = self._run.run_id
                node = self._nodes.get(message.metadata.dst_node_id)
                if node is not None:  # a node gone since the workflow listed it: its reply never comes
                    node.inbox.append(message)
                ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        with self._lock:
            return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push, then wait for the replies until all came, ``timeout`` passed, or every awaited node left."""
        pushed = list(messages)
        waiting = {m_id: m.metadata.dst_node_id for m_id, m in zip(self.push_messages(pushed), pushed, strict=True)}
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting and (deadline is None or time.monotonic() < deadline):
            got = list(self.pull_messages(list(waiting)))
            replies.extend(got)
            for reply in got:
                waiting.pop(reply.metadata.reply_to_message_id, None)
            alive = set(self.get_node_ids())
            waiting = {m_id: node for m_id, node in waiting.items() if node in alive}
            if waiting:
                time.sleep(0.02)
        return replies

    # -- what the servicer calls ------------------------------------------------------------------

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            for node_id, node in list(self._nodes.items()):
                if now - node.seen > self.node_timeout:
                    del self._nodes[node_id]
                    self.dropped.add(node.client)

    def register(self, client: str) -> tuple[int, str]:
        self._expire()
        with self._lock:
            if any(n.client == client for n in self._nodes.values()):
                raise PermissionError(f"client {client!r} is connected already")
            node_id = int.from_bytes(uuid.uuid4().bytes[:7], "big")
            session = uuid.uuid4().hex
            self._nodes[node_id] = _Node(node_id, client, session, time.monotonic())
            self.joined.add(client)
            self.dropped.discard(client)
        return node_id, session

    def _node(self, node_id: int, session: str) -> _Node:
        node = self._nodes.get(node_id)
        if node is None or not hmac.compare_digest(node.session, session):
            raise LookupError("unknown node or session")
        node.seen = time.monotonic()
        return node

    def next_message(self, node_id: int, session: str) -> Message | None:
        with self._lock:
            node = self._node(node_id, session)
            return node.inbox.pop(0) if node.inbox else None

    def reply(self, node_id: int, session: str, message: Message) -> None:
        with self._lock:
            node = self._node(node_id, session)
            message.metadata.__dict__["_src_node_id"] = node_id
        # A copy as it arrived, before the workflow reads it: Flower's compat layer empties what it converts.
        for observer in self.observers:
            observer(node.client, message_from_proto(message_to_proto(message)))
        with self._lock:
            self._replies[message.metadata.reply_to_message_id] = message

    def ping(self, node_id: int, session: str) -> None:
        """A client's heartbeat while it computes (a local fit can take longer than ``node_timeout``)."""
        with self._lock:
            self._node(node_id, session)

    def leave(self, node_id: int, session: str) -> None:
        with self._lock:
            node = self._node(node_id, session)
            del self._nodes[node_id]
            self.dropped.add(node.client)

    def client_of(self, node_id: int) -> str:
        with self._lock:
            node = self._nodes.get(node_id)
        return node.client if node is not None else str(node_id)


class RelayServicer:
    """The gRPC calls (raw bytes, no generated code): Register, Pull, Push, Ping, Leave."""

    def __init__(self, grid: RelayGrid, secret: bytes, job_id: str) -> None:
        self.grid = grid
        self.secret = secret
        self.job_id = job_id

    def _client(self, context: grpc.ServicerContext) -> str:
        """The client name the call's token was issued for; aborts UNAUTHENTICATED otherwise."""
        metadata = dict(context.invocation_metadata())
        client = str(metadata.get("stratus-client", ""))
        scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
        expected = client_token(self.secret, self.job_id, client)
        if not client or scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no valid client token for this federated job")
        return client

    def _session(self, context: grpc.ServicerContext) -> tuple[int, str]:
        self._client(context)
        metadata = dict(context.invocation_metadata())
        try:
            return int(str(metadata.get("stratus-node", ""))), str(metadata.get("stratus-session", ""))
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stratus-node must be a node id")
            raise

    def register(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        client = self._client(context)
        try:
            node_id, session = self.grid.register(client)
        except PermissionError as exc:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        return f"{node_id}\n{session}".encode()

    def pull(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        node_id, session = self._session(context)
        try:
            message = self.grid.next_message(node_id, session)
        except LookupError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return b"" if message is None else bytes(message_to_proto(message).SerializeToString())

    def push(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        node_id, session = self._session(context)
        proto = ProtoMessage()
        try:
            proto.ParseFromString(request)
            message = message_from_proto(proto)
        except Exception:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the body is not a Flower message")
        try:
            self.grid.reply(node_id, session, message)
        except LookupError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return b""

    def ping(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        node_id, session = self._session(context)
        try:
            self.grid.ping(node_id, session)
        except LookupError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return b""

    def leave(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        node_id, session = self._session(context)
        try:
            self.grid.leave(node_id, session)
        except LookupError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return b""


def _raw(fn: Callable[[bytes, grpc.ServicerContext], bytes]) -> Any:
    return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=None, response_serializer=None)


def serve(servicer: RelayServicer, host: str = "127.0.0.1", port: int = 0) -> tuple[grpc.Server, int]:
    """Start the relay on ``host`` (loopback unless told otherwise) and a free port; return the server and port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)],
    )
    handlers = {
        "Register": _raw(servicer.register),
        "Pull": _raw(servicer.pull),
        "Push": _raw(servicer.push),
        "Ping": _raw(servicer.ping),
        "Leave": _raw(servicer.leave),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind the federation relay to {host}:{port}")
    server.start()
    return server, bound
