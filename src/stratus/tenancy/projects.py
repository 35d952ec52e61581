"""The calling project's id in the metadata DB. Apart from the context (stratus.tenancy), so the modules
that read the caller (the runtime's metrics, a replica) import no database."""

from __future__ import annotations

import threading

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from stratus.errors import NotFound
from stratus.store import Database
from stratus.store.tables import Project
from stratus.tenancy import DEFAULT_PROJECT, current_project


class Projects:
    """The calling project's id in the metadata DB, which every service scopes its queries by (so another
    project's model, job or endpoint is simply not found). Projects are never deleted, so ids are cached.
    The default project is created on first use; any other must exist.
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
        with self.db.read() as s:
            found = s.scalar(select(Project.id).where(Project.name == name))
        if found is not None:
            return found
        if name != DEFAULT_PROJECT:
            raise NotFound(f"no project {name!r}")
        try:
            with self.db.write() as s:
                found = s.scalar(select(Project.id).where(Project.name == name))
                if found is None:
                    row = Project(name=name)
                    s.add(row)
                    s.flush()
                    found = row.id
        except sa_exc.IntegrityError:  # another server on a shared DB created it a moment ago: that one it is
            with self.db.read() as s:
                found = s.scalar(select(Project.id).where(Project.name == name))
            if found is None:
                raise
        return found
