from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import inspect, select, text

from stratus.store import Database
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
