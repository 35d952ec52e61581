"""Reading a version's artifacts with checksum verification, health marking, and garbage collection."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from stratus.errors import IntegrityError, NotFound
from stratus.store import Artifacts, Database
from stratus.store.tables import Dataset, Job, JobEvent, ModelVersion, VersionFile

if TYPE_CHECKING:
    from stratus.registry.records import VersionInfo
    from stratus.runtime.pipeline import ModelRef

log = logging.getLogger(__name__)


class BlobAccess:
    def __init__(self, db: Database, artifacts: Artifacts) -> None:
        self.db = db
        self.artifacts = artifacts

    def _changed(self, model: str) -> None:  # overridden by the registry
        pass

    def _verified(self, version: VersionInfo, digest: str) -> bytes:
        try:
            return self.artifacts.read(digest)
        except IntegrityError as exc:
            self.mark_unhealthy(version, str(exc))
            raise IntegrityError(
                f"version {version.version} of model {version.model!r} is unhealthy and will not be served: {exc}"
            ) from None

    def read_artifact(self, version: VersionInfo) -> bytes:
        """The version's bytes, decrypted in memory and checksum-verified (no plain model is ever on disk). A
        mismatch takes the version out of service."""
        return self._verified(version, version.digest)

    def _file_digest(self, version: VersionInfo, name: str) -> str:
        digest = version.files.get(name)
        if digest is None:
            raise NotFound(f"version {version.version} of model {version.model!r} has no file {name!r}")
        return digest

    def read_file(self, version: VersionInfo, name: str) -> bytes:
        return self._verified(version, self._file_digest(version, name))

    def read_ref(self, ref: ModelRef) -> bytes:
        """The ONNX artifact of another registered version, for pipelines built from other models."""
        resolve = getattr(self, "get_version")  # noqa: B009 - provided by the registry that mixes this in
        return self.read_artifact(resolve(ref.name, ref.version))

    def mark_unhealthy(self, version: VersionInfo, reason: str) -> None:
        log.error("model %s version %s marked unhealthy: %s", version.model, version.version, reason)
        with self.db.write() as s:
            row = s.get(ModelVersion, version.id)  # by id: another project may have a model of the same name
            if row is not None:
                row.health = "unhealthy"
                row.health_reason = reason
        self._changed(version.model)

    def _references(self, among: set[str] | None = None) -> set[str]:
        """The digests a row references now (of ``among`` only, when given)."""
        with self.db.read() as s:
            referenced: set[str] = set()
            for table in (ModelVersion, VersionFile, Dataset):
                query = select(table.digest)
                if among is not None:
                    query = query.where(table.digest.in_(among))
                referenced.update(s.scalars(query).all())
            # A queued or running data-parallel job's checkpoints (jobs/service.py keeps only its last one).
            events = select(JobEvent.data).join(Job, Job.id == JobEvent.job_id)
            events = events.where(JobEvent.kind == "checkpoint", Job.state.in_(("queued", "running")))
            for data in s.scalars(events).all():
                digest = (data or {}).get("digest")
                if digest and (among is None or digest in among):
                    referenced.add(str(digest))
            return referenced

    def _drop_unreferenced(self, digests: set[str]) -> None:
        """Delete blobs no version references any more. Caller holds the writer lock. The store decides when:
        the local folder at once, S3 only for blobs past the grace period that other servers' writes rely on
        (a younger one is left to a later collection)."""
        if digests:
            self.artifacts.collect_garbage(lambda: self._references(digests), only=digests)

    def collect_garbage(self) -> int:
        """At start-up, before serving: drop interrupted writes and blobs that no version references.

        These are what a crash or kill -9 in the middle of a registration can leave behind. On S3, shared by
        other servers that may be writing now, only what is older than the grace period goes.
        """
        if self.artifacts.shared:  # the grace period, not a lock of this process, keeps other servers' writes
            return self.artifacts.collect_garbage(self._references)
        with self.db.exclusive():
            return self.artifacts.collect_garbage(self._references)


class Collector:
    """Collects a shared store's garbage every ``interval`` seconds, in a daemon thread: a server may run for
    months, and a deleted version's blobs younger than the grace period outlive the collection at start."""

    def __init__(self, collect: Callable[[], int], interval: float) -> None:
        self._collect = collect
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stratus-artifact-gc", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                removed = self._collect()
            except Exception:  # S3 unreachable for a while: the next round tries again
                log.exception("artifact garbage collection failed")
                continue
            if removed:
                log.info("garbage collection removed %d unreferenced artifact object(s)", removed)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
