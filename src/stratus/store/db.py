"""The metadata database: SQLAlchemy 2 engine, Alembic migrations, one writer and parallel readers.

SQLite runs in WAL mode so readers never block the writer. All writes in a process go through one lock
(the datasette pattern): SQLite allows one writer at a time anyway, and serialising in-process turns
"database is locked" retries into an orderly queue.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

_MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL makes every commit durable on its own, so kill -9 or power loss after a 201 keeps the row.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.RLock()

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision. Safe to run at every start."""
        cfg = alembic_config()
        with self._write_lock, self.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose changes commit together when the block exits, or roll back on error."""
        with self._write_lock, self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the writer lock across several steps (e.g. store a blob, then insert the row that
        references it) so no other writer in this process can interleave between them."""
        with self._write_lock:
            yield

    def dispose(self) -> None:
        self.engine.dispose()
