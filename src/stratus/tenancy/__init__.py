"""Who a piece of work runs for: the project (tenant) and the API key, as context variables.

The HTTP layer sets them once per request after authenticating; services read them to scope every query
to the caller's project. Work started outside a request (start-up, the job runner) runs in the default
project unless it enters ``acting_as``. Context variables follow a request into the thread pool, so a
service called off the event loop sees the same caller.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stratus.errors import NotFound

if TYPE_CHECKING:
    from stratus.store import Database

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


class Projects:
    """The calling project's id in the metadata DB, which every service scopes its queries by (so another
    project's model, job or endpoint is simply not found). Projects are never deleted, so ids are cached.
    The default project is created on first use; any other must exist.

    The database modules are imported when a lookup runs, not with this module: a replica uses the
    context above and has no database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def current_id(self) -> int:
        name = current_project()
        found = self._ids.get(name)
        if found is None:
            found = self._lookup(name)
            with self._lock:
                self._ids[name] = found
        return found

    def _lookup(self, name: str) -> int:
        from sqlalchemy import select

        from stratus.store.tables import Project

        with self.db.read() as s:
            found = s.scalar(select(Project.id).where(Project.name == name))
        if found is not None:
            return found
        if name != DEFAULT_PROJECT:
            raise NotFound(f"no project {name!r}")
        with self.db.write() as s:
            found = s.scalar(select(Project.id).where(Project.name == name))
            if found is None:
                row = Project(name=name)
                s.add(row)
                s.flush()
                found = row.id
        return found
