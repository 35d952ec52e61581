"""What a gRPC handler gets and raises, apart from its messages: shared by the server and the service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


class CallError(Exception):
    """A call's outcome other than OK: a ``grpc.StatusCode`` name, its message and trailing metadata."""

    def __init__(self, code: str, message: str, trailing: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.code, self.message, self.trailing = code, message, trailing


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler learns of its call besides the message: the metadata (lower-case names, text values;
    binary "-bin" ones left out) and the peer ("ipv4:127.0.0.1:51234")."""

    metadata: dict[str, str]
    peer: str


Handler = Callable[[Any, Call], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    request_type: Any  # a generated protobuf message class
    handler: Handler
