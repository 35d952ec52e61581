"""The persistent job queue on SQLite and PostgreSQL: every queued job runs exactly once; on a shared PostgreSQL two
runners (two servers) claim with FOR UPDATE SKIP LOCKED, and a running job is taken over only once its server's
heartbeat is stale."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import scaled
from stratus.jobs import JobService
from stratus.registry import RegistryService
from stratus.security.encryption import Keyring
from stratus.store import ArtifactStore, Database
from stratus.store.tables import Job, JobEvent, utcnow

HERE = Path(__file__).resolve().parent


class CountingKind:
    """A job kind whose child (queue_child.py) only notes that it ran; ``registered`` lists the jobs kept."""

    module = "queue_child"

    def __init__(self) -> None:
        self.registered: list[str] = []
        self._lock = threading.Lock()

    def inputs(self, spec: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        return {"spec": spec}, b"data"

    def register(self, job_id: str, spec: dict[str, Any], job_dir: Path) -> tuple[dict[str, Any], int | None]:
        with self._lock:
            self.registered.append(job_id)
        return {"ok": 1.0}, None


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file every child run appends its job id to; the children find queue_child on PYTHONPATH."""
    path = tmp_path / "runs.txt"
    path.touch()
    monkeypatch.setenv("STRATUS_TEST_JOB_RUNS", str(path))
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    return path


def _server(db: Database, root: Path, kind: CountingKind, name: str, **options: Any) -> JobService:
    registry = RegistryService(db, ArtifactStore(root / "artifacts", Keyring.generate()))
    jobs = JobService(registry, root / name, slots=2, **options)
    jobs.kinds["count"] = kind
    return jobs


def _wait_all_ended(jobs: JobService, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + scaled(60)
    while True:
        listed = jobs.list_jobs(limit=count)
        if len(listed) == count and all(j["state"] in ("succeeded", "failed", "cancelled") for j in listed):
            return listed
        assert time.monotonic() < deadline, [j["state"] for j in listed]
        time.sleep(0.05)


def test_every_job_runs_exactly_once(database_url: str, tmp_path: Path, runs: Path) -> None:
    """SQLite has one server; PostgreSQL gets two runners on one database, as two servers would be."""
    shared = database_url.startswith("postgresql")
    dbs = [Database(database_url) for _ in range(2 if shared else 1)]
    dbs[0].migrate()
    kind = CountingKind()
    servers = [_server(db, tmp_path, kind, f"jobs{i}") for i, db in enumerate(dbs)]
    created = [servers[i % len(servers)].create("count", {"i": i}, "m", retries=0, timeout_s=60) for i in range(12)]
    for jobs in servers:
        jobs.start()
    try:
        ended = _wait_all_ended(servers[0], len(created))
    finally:
        for jobs in servers:
            jobs.close()
        for db in dbs[1:]:  # the first is read below, then disposed
            db.dispose()
    assert {j["state"] for j in ended} == {"succeeded"}
    ran = runs.read_text().split()
    assert sorted(ran) == sorted(j["id"] for j in created)  # each child once, none twice
    assert sorted(kind.registered) == sorted(ran)
    with dbs[0].read() as s:
        runners = {row.runner for row in s.query(Job)}
        starts = s.query(JobEvent).filter(JobEvent.kind == "state").all()
    assert sum(1 for e in starts if e.data.get("state") == "running") == len(created)
    dbs[0].dispose()
    if shared:
        assert len(runners) == 2, "both runners should have claimed some of the 12 jobs"


@pytest.fixture
def shared(database_url: str) -> Iterator[Database]:
    if not database_url.startswith("postgresql"):
        pytest.skip("a shared database: PostgreSQL")
    db = Database(database_url)
    db.migrate()
    yield db
    db.dispose()


def test_only_a_dead_servers_running_job_is_taken_over(shared: Database, tmp_path: Path, runs: Path) -> None:
    kind = CountingKind()
    alive = _server(shared, tmp_path, kind, "alive", lease_seconds=1.0)
    project = alive.registry.projects.current_id()
    stale = utcnow() - timedelta(seconds=30)
    with shared.write() as s:
        # One job of a live server (fresh heartbeat), one of a server that died (its heartbeat long stale).
        s.add(
            Job(
                id="a" * 32,
                project_id=project,
                kind="count",
                state="running",
                runner="live" + "0" * 28,
                heartbeat_at=utcnow(),
                attempts=1,
                retries=1,
                started_at=utcnow(),
            )
        )
        s.add(
            Job(
                id="b" * 32,
                project_id=project,
                kind="count",
                state="running",
                runner="dead" + "0" * 28,
                heartbeat_at=stale,
                attempts=1,
                retries=1,
                started_at=stale,
            )
        )
        s.add(
            Job(
                id="c" * 32,
                project_id=project,
                kind="count",
                state="running",
                runner="dead" + "0" * 28,
                heartbeat_at=stale,
                attempts=1,
                retries=0,
                started_at=stale,
            )
        )
    assert alive.recover() == 2  # a start on a shared DB leaves the live server's job alone
    assert alive.get("a" * 32)["state"] == "running"
    assert alive.get("b" * 32)["state"] == "queued"  # retries left: queued again, and run here
    failed = alive.get("c" * 32)
    assert failed["state"] == "failed" and "server stopped" in failed["error"]
    alive.start()
    try:
        deadline = time.monotonic() + scaled(30)
        while alive.get("b" * 32)["state"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        alive.close()
    assert runs.read_text().split() == ["b" * 32]
    assert alive.get("a" * 32)["state"] == "running"  # still its own server's


def test_a_job_cancelled_on_another_server_stops_where_it_runs(
    shared: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    kind = CountingKind()
    kind.module = "queue_sleeper"
    runner = _server(shared, tmp_path, kind, "runner", lease_seconds=1.0)
    other = _server(Database(shared.url), tmp_path, kind, "other", lease_seconds=1.0)
    job = runner.create("count", {}, "m", retries=0, timeout_s=120)
    runner.start()
    try:
        deadline = time.monotonic() + scaled(30)
        while runner.get(job["id"])["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert other.cancel(job["id"])["state"] == "cancelled"
        while runner.running_ids():  # the runner's heartbeat sees it ended and kills its child
            assert time.monotonic() < deadline, "the child still runs on its server"
            time.sleep(0.05)
    finally:
        runner.close()
        other.db.dispose()
    assert kind.registered == [] and runner.get(job["id"])["state"] == "cancelled"
