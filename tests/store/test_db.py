from __future__ import annotations

import threading
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from pg import PostgresServer
from stratus.store import Database
from stratus.store.db import alembic_config
from stratus.store.tables import Project


def test_migrations_create_schema_in_wal_mode(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.migrate()
    db.migrate()  # idempotent: runs at every start
    tables = set(inspect(db.engine).get_table_names())
    assert {"projects", "models", "model_versions", "aliases", "alembic_version"} <= tables
    with db.read() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.dispose()


def test_single_writer_serialises_concurrent_writes(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.migrate()
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            with db.write() as s:
                s.add(Project(name=f"p{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.read() as s:
        assert len(s.scalars(select(Project)).all()) == 40
    db.dispose()


def test_failed_write_rolls_back(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.migrate()
    try:
        with db.write() as s:
            s.add(Project(name="kept-out"))
            s.flush()
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with db.read() as s:
        assert s.scalars(select(Project)).all() == []
    db.dispose()


def test_servers_starting_together_migrate_once(postgres: PostgresServer) -> None:
    """Four servers start on one empty PostgreSQL at once: the migration lock lets the first upgrade the schema;
    the others wait, then find it at head (without the lock, their CREATE TABLEs collide)."""
    name = postgres.create_database(template=None)
    dbs = [Database(postgres.url(name)) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(dbs))

    def start(db: Database) -> None:
        barrier.wait()
        try:
            db.migrate()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        with dbs[0].read() as s:
            heads = s.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert heads == [ScriptDirectory.from_config(alembic_config()).get_current_head()]
        assert {"projects", "jobs", "leases"} <= set(inspect(dbs[1].engine).get_table_names())
    finally:
        for db in dbs:
            db.dispose()
        postgres.drop_database(name)


def test_the_writer_lock_is_a_cluster_lock_on_postgresql(postgres: PostgresServer) -> None:
    """cluster_lock holds across engines (servers): a second holder waits until the first lets go."""
    name = postgres.create_database()
    first, second = Database(postgres.url(name)), Database(postgres.url(name))
    order: list[str] = []
    entered = threading.Event()

    def other() -> None:
        entered.wait()
        with second.cluster_lock("bootstrap"):
            order.append("second")

    thread = threading.Thread(target=other)
    thread.start()
    try:
        with first.cluster_lock("bootstrap"):
            entered.set()
            thread.join(0.3)  # the other server is blocked meanwhile, however long this takes
            order.append("first")
        thread.join()
        assert order == ["first", "second"]
    finally:
        first.dispose()
        second.dispose()
        postgres.drop_database(name)
