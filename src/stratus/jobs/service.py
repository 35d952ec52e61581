"""The persistent job queue and its runner.

Jobs live in the metadata DB (queued -> running -> succeeded | failed | cancelled) with their events.
One runner thread in the server claims queued jobs up to ``job_slots`` at a time and starts each in the
executor; it reads the child's progress lines, persists them through the single writer, and on success
lets the job's kind register the verified model as a new version with lineage. A job running when the server died is
failed (or re-queued while retries remain) at the next start.

On a shared database (several servers on one PostgreSQL) every server runs a runner: a job is claimed with
``SELECT ... FOR UPDATE SKIP LOCKED`` in the transaction that marks it running, so whichever server it was submitted
to, exactly one runner gets it. The claiming server writes its instance id and a heartbeat on the row; another server
re-queues (or fails) a running job only when that heartbeat is stale, i.e. its server died, and a server whose job
was taken over that way discards its own result instead of registering a second version.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from stratus import tenancy
from stratus.errors import Conflict, InvalidInput, NotFound, StratusError
from stratus.jobs.executor import Executor, LocalProcessExecutor, RunningWork, WorkItem
from stratus.registry import RegistryService
from stratus.store.tables import Job, JobEvent, Project, utcnow
from stratus.tenancy import DEFAULT_PROJECT

#: Told of each finished job's CPU time: (caller, job kind, model name, CPU seconds). Usage metering listens.
CpuListener = Callable[[tenancy.Caller, str, str, float], None]

log = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "cancelled")


def job_dict(row: Job) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state,
        "spec": row.spec,
        "progress": row.progress,
        "metrics": row.metrics,
        "error": row.error,
        "model": row.model_name,
        "version": row.model_version,
        "retries": row.retries,
        "attempts": row.attempts,
        "timeout_s": row.timeout_s,
        "cpu_seconds": row.cpu_seconds,
        "created_at": row.created_at.isoformat() + "Z",
        "started_at": row.started_at.isoformat() + "Z" if row.started_at else None,
        "finished_at": row.finished_at.isoformat() + "Z" if row.finished_at else None,
    }


class JobKind(Protocol):
    """What the runner needs from a kind of job: the child module, its inputs, and how to keep its result."""

    module: str

    def inputs(self, spec: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """The child's request.json and the bytes piped to its stdin (decrypted data stays off the disk)."""
        ...

    def register(self, job_id: str, spec: dict[str, Any], job_dir: Path) -> tuple[dict[str, Any], int | None]:
        """Keep what a successful child produced; return the job's metrics and the version it made."""
        ...


class JobService:
    def __init__(
        self,
        registry: RegistryService,
        work_root: Path,
        *,
        slots: int = 1,
        threads_per_job: int = 1,
        executor: Executor | None = None,
        instance: str | None = None,
        lease_seconds: float = 5.0,
    ) -> None:
        self.registry = registry
        #: This server's id on the rows of the jobs it runs (a shared DB has other servers' running jobs too).
        self.instance = instance or uuid.uuid4().hex
        #: A running job's heartbeat is renewed every third of this; another server takes it over after 3x this.
        self.lease_seconds = lease_seconds
        self._beat_at = 0.0
        self.db = registry.db
        self.work_root = work_root
        self.slots = slots
        self.threads_per_job = threads_per_job
        self.executor = executor or LocalProcessExecutor()
        self._running: dict[str, RunningWork] = {}
        self._cancelled: set[str] = set()
        self.cpu_listeners: list[CpuListener] = []
        #: Kinds register themselves here (training.jobs.TrainingJobs, compress.service.CompressionService).
        self.kinds: dict[str, JobKind] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._job_threads: set[threading.Thread] = set()

    # -- API --------------------------------------------------------------------------------------

    def create(
        self, kind: str, spec: dict[str, Any], model_name: str, *, retries: int, timeout_s: int
    ) -> dict[str, Any]:
        """Queue a job of a registered kind, owned by the caller's project and key."""
        if kind not in self.kinds:
            raise NotFound(f"no job kind {kind!r}")
        job = Job(
            id=uuid.uuid4().hex,
            project_id=self.registry.projects.current_id(),
            kind=kind,
            state="queued",
            spec={**spec, "key_id": tenancy.current().key_id},
            model_name=model_name,
            retries=retries,
            timeout_s=timeout_s,
        )
        with self.db.write() as s:
            s.add(job)
            s.add(JobEvent(job_id=job.id, seq=1, kind="state", data={"state": "queued"}))
        self._wake.set()
        return self.get(job.id)

    def _row(self, job_id: str) -> Job:
        with self.db.read() as s:
            row = s.get(Job, job_id) if len(job_id) == 32 and job_id.isalnum() else None
        if row is None or row.project_id != self.registry.projects.current_id():
            raise NotFound(f"job {job_id!r} does not exist")
        return row

    def get(self, job_id: str) -> dict[str, Any]:
        return job_dict(self._row(job_id))

    def list_jobs(
        self, state: str | None = None, limit: int = 100, *, offset: int = 0, kind: str | None = None
    ) -> list[dict[str, Any]]:
        with self.db.read() as s:
            query = select(Job).where(Job.project_id == self.registry.projects.current_id())
            if state is not None:
                query = query.where(Job.state == state)
            if kind is not None:  # the console lists training and compression runs apart
                query = query.where(Job.kind == kind)
            rows = s.scalars(query.order_by(Job.created_at.desc()).offset(max(0, offset)).limit(limit)).all()
        return [job_dict(r) for r in rows]

    def events(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        self._row(job_id)
        with self.db.read() as s:
            rows = s.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after).order_by(JobEvent.seq)
            ).all()
        return [{"seq": r.seq, "kind": r.kind, "data": r.data, "at": r.created_at.isoformat() + "Z"} for r in rows]

    def cancel(self, job_id: str) -> dict[str, Any]:
        row = self._row(job_id)
        if row.state in TERMINAL:
            raise Conflict(f"job {job_id} is already {row.state}")
        with self._lock:
            self._cancelled.add(job_id)
            work = self._running.get(job_id)
        if work is not None:
            work.stop()  # SIGKILL to the child's process group: takes effect at once
        else:
            # Queued, or running on another server of a shared DB: that server's heartbeat sees the job ended
            # and stops its process.
            running_elsewhere = row.state == "running"
            reason = "cancelled on another server" if running_elsewhere else "cancelled before it started"
            self._finish(job_id, "cancelled", error=reason, force=True)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and self.get(job_id)["state"] not in TERMINAL:
            time.sleep(0.02)
        return self.get(job_id)

    def running_ids(self) -> list[str]:
        """The jobs whose work runs on this server now."""
        with self._lock:
            return list(self._running)

    # -- runner -----------------------------------------------------------------------------------

    def recover(self) -> int:
        """At start-up: jobs that were running when the server died fail, or queue again. On a shared DB only
        the jobs whose server stopped renewing their heartbeat: the others are running on live servers."""
        changed = self._take_over_orphans(everything=not self.db.shared)
        if self.work_root.exists():
            with self.db.read() as s:
                running = set(s.scalars(select(Job.id).where(Job.state == "running")).all())
            for leftover in self.work_root.iterdir():
                if leftover.name not in running:  # another server may share this folder on a shared DB
                    shutil.rmtree(leftover, ignore_errors=True)
        return changed

    def _db_now(self, s: Session) -> datetime:
        """The database's clock (naive UTC) on a shared DB, so servers with skewed clocks agree on staleness."""
        if self.db.is_postgresql:
            found = s.scalar(select(func.timezone("UTC", func.now())))
            if isinstance(found, datetime):
                return found
        return utcnow()

    def _take_over_orphans(self, everything: bool) -> int:
        """Re-queue (while retries remain) or fail running jobs whose server is gone: all of them (one server, at its
        start), or those whose heartbeat is older than three lease periods (a shared DB)."""
        changed = 0
        with self.db.write() as s:
            query = select(Job).where(Job.state == "running")
            if not everything:
                stale = self._db_now(s) - timedelta(seconds=3 * self.lease_seconds)
                query = query.where(
                    (Job.heartbeat_at < stale) | (Job.heartbeat_at.is_(None) & (Job.started_at < stale))
                )
            for row in s.scalars(query.with_for_update(skip_locked=True)).all():
                requeue = row.attempts <= row.retries
                row.state = "queued" if requeue else "failed"
                row.error = "" if requeue else "the server stopped while this job was running"
                row.finished_at = None if requeue else utcnow()
                row.runner = None
                self._add_event(s, row.id, "state", {"state": row.state, "reason": "server restart"})
                changed += 1
        return changed

    def _heartbeat(self) -> None:
        """Renew the heartbeat of this server's running jobs, and take over the orphans of dead servers."""
        now = time.monotonic()
        if not self.db.shared or now - self._beat_at < self.lease_seconds / 3:
            return
        self._beat_at = now
        with self._lock:
            mine = list(self._running)
        if mine:
            with self.db.write() as s:
                s.execute(
                    update(Job)
                    .where(Job.id.in_(mine), Job.runner == self.instance, Job.state == "running")
                    .values(heartbeat_at=self._db_now(s))
                )
                kept = set(
                    s.scalars(
                        select(Job.id).where(Job.id.in_(mine), Job.runner == self.instance, Job.state == "running")
                    ).all()
                )
            for job_id in set(mine) - kept:  # cancelled on another server, or taken over: stop the work here
                with self._lock:
                    self._cancelled.add(job_id)
                    work = self._running.get(job_id)
                if work is not None:
                    work.stop()
        if self._take_over_orphans(everything=False):
            self._wake.set()

    def _still_mine(self, job_id: str) -> bool:
        """False when another server took the job over (this one looked dead): its result must not be kept."""
        with self.db.read() as s:
            row = s.get(Job, job_id)
        return row is not None and row.state == "running" and (row.runner in (None, self.instance))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="stratus-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            running = list(self._running.values())
        for work in running:
            work.stop()
        # Their threads record the end (through the DB) within moments of the kill: let them, so nothing writes
        # to the database after the caller disposed of it.
        if self._thread is not None:
            self._thread.join(5)
        for thread in list(self._job_threads):
            thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            try:
                self._heartbeat()
                self._claim_and_start()
            except Exception:  # the runner must outlive any one job's failure
                log.exception("job runner iteration failed")

    def _claim_and_start(self) -> None:
        while True:
            with self._lock:
                if len(self._running) >= self.slots:
                    return
            with self.db.write() as s:
                # SKIP LOCKED: a job another server is claiming right now is passed over, not waited for, and
                # the UPDATE below commits with the row lock: exactly one server runs it (SQLite ignores the clause).
                candidates = s.scalars(
                    select(Job)
                    .where(Job.state == "queued")
                    .order_by(Job.created_at)
                    .limit(16)
                    .with_for_update(skip_locked=True)
                ).all()
                row = next((r for r in candidates if self._placeable(s, r)), None)
                if row is None:
                    return
                row.state = "running"
                if "waiting" in (row.progress or {}):
                    row.progress = {}
                row.attempts += 1
                row.started_at = utcnow()
                row.runner = self.instance
                row.heartbeat_at = self._db_now(s)
                self._add_event(s, row.id, "state", {"state": "running", "attempt": row.attempts})
                job_id, timeout_s, kind = row.id, row.timeout_s, row.kind
                spec = {**dict(row.spec), "model_name": row.model_name, "job_id": row.id}
                project = s.scalar(select(Project.name).where(Project.id == row.project_id)) or DEFAULT_PROJECT
            caller = tenancy.Caller(project=project, key_id=str(spec.get("key_id", "")))
            if kind not in self.kinds:  # queued by a Stratus that knew a kind this one does not
                self._finish(job_id, "failed", error=f"this server cannot run jobs of kind {kind!r}")
                continue
            args = (caller, self.kinds[kind], job_id, spec, timeout_s)
            thread = threading.Thread(target=self._run_as, args=args, daemon=True)
            self._job_threads.add(thread)
            thread.start()

    def _placeable(self, s: Session, row: Job) -> bool:
        """Whether the cluster has room for a job that states its resources (a data-parallel job) now. One that has
        not stays queued, not failed, with the reason in its progress (and one ``waiting`` event when it starts to)."""
        need = (row.spec or {}).get("resources")
        problem = getattr(self.executor, "placement_problem", None)
        if not need or problem is None:
            return True
        reason = problem(need, self.threads_per_job, now=True)
        if reason is None:
            return True
        if (row.progress or {}).get("waiting") != reason:
            if "waiting" not in (row.progress or {}):
                self._add_event(s, row.id, "waiting", {"reason": reason})
            row.progress = {"waiting": reason}
        return False

    def check_placeable(self, need: dict[str, Any]) -> None:
        """At submit: refuse a data-parallel job this server's executor could never place, with the reason."""
        problem = getattr(self.executor, "placement_problem", None)
        if problem is None:
            raise InvalidInput(
                "workers (data-parallel training) needs the Ray executor: start the server with "
                "STRATUS_EXECUTOR=ray and a Ray cluster (see docs/scale-out.md)"
            )
        reason = problem(need, self.threads_per_job, now=False)
        if reason is not None:
            raise InvalidInput(reason)

    # -- checkpoints ------------------------------------------------------------------------------

    def _keep_checkpoint(self, job_id: str, event: dict[str, Any]) -> None:
        """A data-parallel job's checkpoint line: the state goes into the artifact store (sealed, checksummed like
        any blob), the event keeps its epoch and digest. Only a running job's last checkpoint is referenced: the
        one before it is dropped."""
        data = base64.b64decode(str(event.pop("state", "")), validate=True)
        before = self.last_checkpoint_digest(job_id)
        with self.db.exclusive():  # no collection between the write and the row that references it
            stored = self.registry.artifacts.put_bytes(data)
            with self.db.write() as s:
                self._add_event(s, job_id, "checkpoint", {**event, "digest": stored.digest, "bytes": stored.size})
            if before is not None and before != stored.digest:
                self.registry._drop_unreferenced({before})

    def last_checkpoint_digest(self, job_id: str) -> str | None:
        with self.db.read() as s:
            data = s.scalar(
                select(JobEvent.data)
                .where(JobEvent.job_id == job_id, JobEvent.kind == "checkpoint")
                .order_by(JobEvent.seq.desc())
                .limit(1)
            )
        return str(data["digest"]) if data and data.get("digest") else None

    def last_checkpoint(self, job_id: str) -> tuple[str, bytes] | None:
        """The digest and bytes of the job's last checkpoint (read and verified from the artifact store)."""
        digest = self.last_checkpoint_digest(job_id)
        return None if digest is None else (digest, self.registry.artifacts.read(digest))

    def _drop_checkpoints(self, job_id: str) -> None:
        """The job has ended: its checkpoint is no longer referenced."""
        digest = self.last_checkpoint_digest(job_id)
        if digest is not None:
            with self.db.exclusive():
                self.registry._drop_unreferenced({digest})

    def _run_as(self, caller: tenancy.Caller, kind: JobKind, job_id: str, spec: dict[str, Any], timeout_s: int) -> None:
        """Run a job as the project that submitted it, so its dataset and model resolve in that project."""
        try:
            with tenancy.acting_as(caller):
                self._run(kind, job_id, spec, timeout_s)
        finally:
            self._job_threads.discard(threading.current_thread())

    def _run(self, kind: JobKind, job_id: str, spec: dict[str, Any], timeout_s: int) -> None:
        job_dir = self.work_root / job_id  # the id is a server-made hex uuid, never user input
        try:
            request, stdin = kind.inputs(spec)
            job_dir.mkdir(parents=True, exist_ok=True)
            (job_dir / "request.json").write_text(json.dumps(request))
            work = self.executor.start(WorkItem(job_id, job_dir, stdin, self.threads_per_job, kind.module))
        except StratusError as exc:
            self._finish(job_id, "failed", error=exc.message)
            shutil.rmtree(job_dir, ignore_errors=True)
            return
        with self._lock:
            self._running[job_id] = work
        timed_out = threading.Event()  # set by the timer itself: no race between its stop and a clock read here

        def time_out() -> None:
            timed_out.set()
            work.stop()

        timer = threading.Timer(timeout_s, time_out)
        timer.start()
        last_error = ""
        try:
            for line in work.lines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "error":
                    last_error = str(event.get("message", ""))
                self._record(job_id, event)
            code = work.wait()
        finally:
            timer.cancel()
            with self._lock:
                self._running.pop(job_id, None)
                cancelled = job_id in self._cancelled
        try:
            if cancelled:
                self._finish(job_id, "cancelled", cpu=work.cpu_seconds())
            elif code != 0:
                reason = (
                    f"timed out after {timeout_s} s"
                    if timed_out.is_set()
                    else last_error or f"the job's process exited with {code}: {work.stderr_tail()}"
                )
                self._finish(job_id, "failed", error=reason, cpu=work.cpu_seconds())
            elif not self._still_mine(job_id):
                log.warning("job %s was taken over by another server; its result here is discarded", job_id)
            else:
                metrics, version = kind.register(job_id, spec, job_dir)
                self._finish(job_id, "succeeded", metrics=metrics, version=version, cpu=work.cpu_seconds())
        except StratusError as exc:
            self._finish(job_id, "failed", error=exc.message, cpu=work.cpu_seconds())
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)

    # -- persistence ------------------------------------------------------------------------------

    @staticmethod
    def _add_event(s: Any, job_id: str, kind: str, data: dict[str, Any]) -> None:
        # The job's row lock orders events written by two servers at once (a cancel on one while the other
        # records progress), so the next sequence number is never taken twice.
        s.execute(select(Job.id).where(Job.id == job_id).with_for_update())
        seq = (s.scalar(select(func.max(JobEvent.seq)).where(JobEvent.job_id == job_id)) or 0) + 1
        s.add(JobEvent(job_id=job_id, seq=seq, kind=kind, data=data))

    def _record(self, job_id: str, event: dict[str, Any]) -> None:
        kind = str(event.pop("event", "log"))
        if kind == "checkpoint":
            try:
                self._keep_checkpoint(job_id, event)
            except (ValueError, StratusError) as exc:  # a lost checkpoint costs a resume point, not the job
                log.warning("job %s: checkpoint of epoch %s not kept: %s", job_id, event.get("epoch"), exc)
            return
        with self.db.write() as s:
            self._add_event(s, job_id, kind, event)
            if kind == "epoch":
                row = s.get(Job, job_id)
                if row is not None:
                    row.progress = event

    def _finish(
        self,
        job_id: str,
        state: str,
        *,
        error: str = "",
        metrics: dict[str, Any] | None = None,
        version: int | None = None,
        cpu: float = 0.0,
        force: bool = False,
    ) -> None:
        with self.db.write() as s:
            row = s.get(Job, job_id)
            if row is None or row.state in TERMINAL:
                return
            if not force and row.runner not in (None, self.instance):
                return  # taken over by another server, whose runner finishes it
            row.state = state
            row.error = error
            row.finished_at = utcnow()
            if "waiting" in (row.progress or {}):  # it no longer waits for room
                row.progress = {}
            row.cpu_seconds = cpu
            if metrics is not None:
                row.metrics = metrics
            if version is not None:
                row.model_version = version
            self._add_event(s, job_id, "state", {"state": state, "error": error, "version": version})
            kind, model = row.kind, row.model_name or ""
            checkpointed = bool((row.spec or {}).get("resources"))
        if checkpointed:
            self._drop_checkpoints(job_id)
        if cpu > 0:
            for listener in self.cpu_listeners:
                listener(tenancy.current(), "training" if kind == "train" else kind, model, cpu)


__all__ = ["TERMINAL", "JobKind", "JobService", "job_dict"]
