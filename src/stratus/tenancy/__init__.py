"""Who a piece of work runs for: the project (tenant) and the API key, as context variables.

The HTTP layer sets them once per request after authenticating; services read them to scope every query
to the caller's project. Work started outside a request (start-up, the job runner) runs in the default
project unless it enters ``acting_as``. Context variables follow a request into the thread pool, so a
service called off the event loop sees the same caller.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

DEFAULT_PROJECT = "default"


@dataclass(frozen=True, slots=True)
class Caller:
    project: str = DEFAULT_PROJECT
    key_id: str = ""
    scopes: frozenset[str] = frozenset()


SYSTEM = Caller()
_caller: ContextVar[Caller] = ContextVar("stratus_caller", default=SYSTEM)
_NO_HEADERS: Mapping[str, str] = {}
# The request's headers, for routing decisions made below the HTTP layer (an endpoint's sticky header).
_headers: ContextVar[Mapping[str, str]] = ContextVar("stratus_request_headers", default=_NO_HEADERS)


def current() -> Caller:
    return _caller.get()


def current_project() -> str:
    return _caller.get().project


def enter(caller: Caller, headers: Mapping[str, str] | None = None) -> None:
    """Set the caller (and the request's headers) for the rest of this context (one request's task)."""
    _caller.set(caller)
    if headers is not None:
        _headers.set(headers)


def request_headers() -> Mapping[str, str]:
    """Headers of the request being served (lower-case names); empty outside a request."""
    return _headers.get()


@contextmanager
def acting_as(caller: Caller) -> Iterator[None]:
    token = _caller.set(caller)
    try:
        yield
    finally:
        _caller.reset(token)
