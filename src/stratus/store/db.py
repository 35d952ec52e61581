"""The metadata database: SQLAlchemy 2 engine, Alembic migrations, one writer and parallel readers.

SQLite runs in WAL mode so readers never block the writer. All writes in a process go through one lock
(the datasette pattern): SQLite allows one writer at a time anyway, and serialising in-process turns
"database is locked" retries into an orderly queue.

PostgreSQL (``postgresql+psycopg://...``) may be shared by several servers. The in-process lock still orders
one server's writers, but it protects nothing across servers: there, correctness rests on transactions,
unique constraints (a lost race is an IntegrityError the services turn into 409 or retry), row locks
(the job queue's ``FOR UPDATE SKIP LOCKED``) and advisory locks (``cluster_lock``: migrations, bootstrap).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, func, select, text
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


def lock_key(name: str) -> int:
    """A stable 32-bit advisory lock id for ``name``, in Stratus's own namespace (the two-int form of
    pg_advisory_lock), so it cannot collide with another application's locks on a shared database."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


#: First half of every advisory lock id Stratus takes ("STRA").
LOCK_NAMESPACE = 0x53545241


_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS alembic_version (
    version_num VARCHAR(255) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"""


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgresql = url.startswith("postgresql")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        elif self.is_postgresql:
            # A shared server can restart or drop idle connections; check a pooled one before using it.
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.RLock()

    @property
    def shared(self) -> bool:
        """True when other servers may write to this database too (anything but embedded SQLite)."""
        return not self.is_sqlite

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision. Safe to run at every start, and by several servers
        starting together on PostgreSQL: the first takes the migration lock and upgrades, the others wait for it
        and then find the schema at head (PostgreSQL's DDL is transactional, so a crash leaves no half schema)."""
        cfg = alembic_config()
        with self._write_lock, self.engine.begin() as connection:
            self._xact_lock(connection, "migrations")
            if self.is_postgresql:
                # Alembic makes version_num VARCHAR(32), which SQLite never enforces and PostgreSQL does; the
                # revision ids here are descriptive and longer. Made (or widened) before Alembic looks for it.
                connection.execute(text(_VERSION_TABLE))
                connection.execute(text("ALTER TABLE alembic_version ALTER COLUMN version_num TYPE VARCHAR(255)"))
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    def _xact_lock(self, connection: Connection, name: str) -> None:
        if self.is_postgresql:
            connection.execute(select(func.pg_advisory_xact_lock(LOCK_NAMESPACE, lock_key(name))))

    @contextmanager
    def cluster_lock(self, name: str) -> Iterator[None]:
        """Hold the lock ``name`` across every server of this database for the block (a PostgreSQL advisory
        lock on a connection of its own, released at the end even if the block fails); on SQLite, the
        writer lock, since one server is all there is."""
        if not self.is_postgresql:
            with self._write_lock:
                yield
            return
        with self.engine.connect() as connection:
            connection.execute(select(func.pg_advisory_lock(LOCK_NAMESPACE, lock_key(name))))
            connection.commit()
            try:
                yield
            finally:
                connection.execute(select(func.pg_advisory_unlock(LOCK_NAMESPACE, lock_key(name))))
                connection.commit()

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
