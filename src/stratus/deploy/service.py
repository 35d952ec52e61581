"""Endpoints as records: create, update (a new revision), roll back, delete; revisions and events in the
metadata DB. Every change becomes a revision with its targets pinned to version numbers, which the
controller rolls out. On start, each endpoint's live revision is deployed again.

With several servers on one database only the server holding endpoint control (deploy/lease.py) runs the
controller: a change made on another server is recorded there, and the holder applies it on its next ``sync``
(every lease renewal, a second or two later). A new holder deploys every endpoint's live revision, as at a start."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stratus import tenancy
from stratus.deploy import bundle
from stratus.deploy.controller import Controller, Plan
from stratus.deploy.spec import EndpointSpec
from stratus.errors import Conflict, InvalidInput, NotFound
from stratus.registry import RegistryService
from stratus.registry.names import check_name
from stratus.registry.records import VersionInfo
from stratus.store import Database
from stratus.store.tables import Endpoint, EndpointEvent, EndpointRevision, Project, utcnow

log = logging.getLogger(__name__)


def _iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"


class EndpointService:
    """The records of endpoints, and the recorder the controller reports to."""

    def __init__(self, db: Database, registry: RegistryService) -> None:
        self.db = db
        self.registry = registry
        self.controller: Controller | None = None
        #: The newest revision of each endpoint (by id) this server's controller was given: ``sync`` applies newer ones.
        self._applied: dict[int, int] = {}
        self._sync_lock = threading.Lock()

    def attach(self, controller: Controller) -> None:
        self.controller = controller

    def _controller(self) -> Controller:
        if self.controller is None:
            raise RuntimeError("the endpoint service has no controller")
        return self.controller

    # -- records -----------------------------------------------------------------------------------------

    def _row(self, s: Session, name: str) -> Endpoint:
        check_name(name, "endpoint name")
        row = s.scalar(
            select(Endpoint).where(Endpoint.project_id == self.registry.projects.current_id(), Endpoint.name == name)
        )
        if row is None:
            raise NotFound(f"endpoint {name!r} does not exist")
        return row

    def _pin(self, spec: EndpointSpec) -> dict[str, Any]:
        """The spec with every target resolved to a servable version number, now."""
        pinned = spec.model_dump()
        for group in ("targets", "shadows"):
            for entry in pinned[group]:
                version = self.registry.resolve(entry["model"], entry["version"])
                if version.status != "active" or version.health != "healthy":
                    raise InvalidInput(
                        f"version {version.version} of model {version.model!r} is {version.status}/{version.health} "
                        "and cannot be deployed"
                    )
                entry["requested"], entry["version"] = entry["version"], version.version
        return pinned

    def _plan(self, row: Endpoint, number: int, pinned: dict[str, Any]) -> Plan:
        spec = EndpointSpec.model_validate(
            {**pinned, "targets": [_ref(t) for t in pinned["targets"]], "shadows": [_ref(t) for t in pinned["shadows"]]}
        )
        get = self.registry.get_version
        return Plan(
            endpoint_id=row.id,
            project=tenancy.current_project(),
            name=row.name,
            revision=number,
            targets=[(get(t["model"], int(t["version"])), int(t["weight"])) for t in pinned["targets"]],
            shadows=[get(t["model"], int(t["version"])) for t in pinned["shadows"]],
            sticky_header=spec.sticky_header,
            scaling=spec.scaling,
            rollout=spec.rollout,
            canary=spec.canary,
        )

    def _new_revision(self, s: Session, row: Endpoint, pinned: dict[str, Any], reason: str) -> Plan:
        # The endpoint's row lock orders revisions made on several servers at once (SQLite has one writer anyway).
        s.execute(select(Endpoint.id).where(Endpoint.id == row.id).with_for_update())
        number = (
            s.scalar(select(func.max(EndpointRevision.number)).where(EndpointRevision.endpoint_id == row.id)) or 0
        ) + 1
        s.add(
            EndpointRevision(
                endpoint_id=row.id,
                number=number,
                spec=pinned,
                reason=reason,
                created_by=tenancy.current().key_id or None,
            )
        )
        row.state, row.updated_at = "deploying", utcnow()
        s.add(EndpointEvent(endpoint_id=row.id, kind="revision_created", revision=number, detail={"reason": reason}))
        s.flush()
        return self._plan(row, number, pinned)

    def create(self, name: str, raw: Any) -> dict[str, Any]:
        check_name(name, "endpoint name")
        spec = EndpointSpec.parse(raw)
        if any(m.name == name for m in self.registry.list_models()):
            raise Conflict(f"{name!r} is a model's name; an endpoint needs a name of its own")
        pinned = self._pin(spec)
        project_id = self.registry.projects.current_id()
        try:
            with self.db.write() as s:
                if s.scalar(select(Endpoint.id).where(Endpoint.project_id == project_id, Endpoint.name == name)):
                    raise Conflict(f"endpoint {name!r} already exists")
                row = Endpoint(project_id=project_id, name=name)
                s.add(row)
                s.flush()
                plan = self._new_revision(s, row, pinned, "created")
        except sa_exc.IntegrityError:  # created on another server of a shared DB at the same moment
            raise Conflict(f"endpoint {name!r} already exists") from None
        self._deploy(plan)
        return self.get(name)

    def update(self, name: str, raw: Any) -> dict[str, Any]:
        with self.db.read() as s:
            self._row(s, name)  # another project's endpoint is not found, whatever the body says
        spec = EndpointSpec.parse(raw)
        pinned = self._pin(spec)
        with self.db.write() as s:
            plan = self._new_revision(s, self._row(s, name), pinned, "updated")
        self._deploy(plan)
        return self.get(name)

    def rollback(self, name: str, revision: int | None = None) -> dict[str, Any]:
        """Deploy an earlier revision's pinned targets again, as a new revision."""
        with self.db.write() as s:
            row = self._row(s, name)
            revisions = s.scalars(
                select(EndpointRevision).where(EndpointRevision.endpoint_id == row.id).order_by(EndpointRevision.number)
            ).all()
            if revision is None:
                earlier = [r for r in revisions if r.number < row.revision and r.status in ("live", "superseded")]
                if not earlier:
                    raise Conflict(f"endpoint {name!r} has no earlier revision that served to roll back to")
                chosen = earlier[-1]
            else:
                chosen = next((r for r in revisions if r.number == revision), None)  # type: ignore[assignment]
                if chosen is None:
                    raise NotFound(f"endpoint {name!r} has no revision {revision}")
            plan = self._new_revision(s, row, dict(chosen.spec), f"rollback to revision {chosen.number}")
        self._deploy(plan)
        return self.get(name)

    def delete(self, name: str) -> None:
        with self.db.write() as s:
            row = self._row(s, name)
            s.delete(row)
        self._applied.pop(row.id, None)
        self._controller().remove(tenancy.current_project(), name)  # on another server: the holder's sync does

    def stand_down(self) -> None:
        """This server lost endpoint control: its controller stops its replicas; the new holder redeploys."""
        self._applied.clear()
        self._controller().stand_down()

    def _deploy(self, plan: Plan) -> None:
        """Roll out here when this server controls the endpoints; otherwise the holder's ``sync`` picks it up."""
        controller = self._controller()
        if controller.in_control():
            self._applied[plan.endpoint_id] = max(plan.revision, self._applied.get(plan.endpoint_id, 0))
            controller.apply(plan)

    def sync(self) -> int:
        """On the server holding endpoint control: roll out revisions made on other servers, and remove the endpoints
        deleted there. Returns the number of changes applied."""
        controller = self._controller()
        if not controller.in_control():
            return 0
        with self._sync_lock:
            newer = []
            with self.db.read() as s:
                rows = s.execute(select(Endpoint, Project.name).join(Project, Project.id == Endpoint.project_id)).all()
                existing = {(project, row.name) for row, project in rows}
                for row, project in rows:
                    latest = s.scalar(
                        select(EndpointRevision)
                        .where(EndpointRevision.endpoint_id == row.id)
                        .order_by(EndpointRevision.number.desc())
                        .limit(1)
                    )
                    if latest is None or latest.number <= self._applied.get(row.id, 0):
                        continue
                    self._applied[row.id] = latest.number
                    if latest.status == "pending":
                        newer.append((project, row, latest.number, dict(latest.spec)))
            for project, row, number, pinned in newer:
                with tenancy.acting_as(tenancy.Caller(project=project)):
                    try:
                        controller.apply(self._plan(row, number, pinned))
                    except Exception:
                        log.exception("could not roll out revision %d of endpoint %s", number, row.name)
            gone = [key for key in controller.endpoint_keys() if key not in existing]
            for project, name in gone:
                controller.remove(project, name)
            return len(newer) + len(gone)

    def _describe(self, s: Session, row: Endpoint) -> dict[str, Any]:
        current = s.scalar(
            select(EndpointRevision).where(
                EndpointRevision.endpoint_id == row.id, EndpointRevision.number == row.revision
            )
        )
        latest = s.scalar(
            select(EndpointRevision)
            .where(EndpointRevision.endpoint_id == row.id)
            .order_by(EndpointRevision.number.desc())
        )
        return {
            "name": row.name,
            "state": row.state,
            "message": row.message,
            "revision": row.revision,
            "latest_revision": latest.number if latest else 0,
            "spec": shown.spec if (shown := current or latest) is not None else {},
            "live": self._controller().status(tenancy.current_project(), row.name),
            "created_at": _iso(row.created_at),
            "updated_at": _iso(row.updated_at),
        }

    def get(self, name: str) -> dict[str, Any]:
        with self.db.read() as s:
            return self._describe(s, self._row(s, name))

    def list_all(self) -> list[dict[str, Any]]:
        with self.db.read() as s:
            rows = s.scalars(
                select(Endpoint)
                .where(Endpoint.project_id == self.registry.projects.current_id())
                .order_by(Endpoint.name)
            ).all()
            return [self._describe(s, row) for row in rows]

    def revisions(self, name: str) -> list[dict[str, Any]]:
        with self.db.read() as s:
            row = self._row(s, name)
            found = s.scalars(
                select(EndpointRevision).where(EndpointRevision.endpoint_id == row.id).order_by(EndpointRevision.number)
            ).all()
            return [
                {
                    "revision": r.number,
                    "status": r.status,
                    "reason": r.reason,
                    "spec": r.spec,
                    "created_by": r.created_by,
                    "created_at": _iso(r.created_at),
                }
                for r in found
            ]

    def events(self, name: str, limit: int = 200) -> list[dict[str, Any]]:
        with self.db.read() as s:
            row = self._row(s, name)
            found = s.scalars(
                select(EndpointEvent)
                .where(EndpointEvent.endpoint_id == row.id)
                .order_by(EndpointEvent.id.desc())
                .limit(limit)
            ).all()
            return [
                {"at": _iso(e.at), "kind": e.kind, "revision": e.revision, "detail": e.detail} for e in reversed(found)
            ]

    def live_versions(self, name: str) -> list[tuple[VersionInfo, int]]:
        """The live revision's versions and weights (for exports)."""
        with self.db.read() as s:
            row = self._row(s, name)
            if row.revision == 0:
                raise Conflict(f"endpoint {name!r} has no live revision yet (state {row.state})")
            current = s.scalar(
                select(EndpointRevision).where(
                    EndpointRevision.endpoint_id == row.id, EndpointRevision.number == row.revision
                )
            )
            assert current is not None
            pinned = dict(current.spec)
        return [(self.registry.get_version(t["model"], int(t["version"])), int(t["weight"])) for t in pinned["targets"]]

    def bundle(self, name: str) -> dict[str, bytes]:
        """The live revision's serving bundle (every target, with its weight), for an export."""
        routes = [bundle.Route(v.model, v.version, weight) for v, weight in self.live_versions(name)]
        return bundle.build(name, routes, self.registry.get_version, self.read_blob)

    # -- what the controller calls -------------------------------------------------------------------------

    def entries_for(self, project: str, version: VersionInfo) -> dict[str, bytes]:
        """A one-version serving bundle (decrypted, in memory) for a replica."""
        with tenancy.acting_as(tenancy.Caller(project=project)):
            return bundle.build(
                version.model,
                [bundle.Route(version.model, version.version, 100)],
                self.registry.get_version,
                self.read_blob,
            )

    def read_blob(self, version: VersionInfo, digest: str) -> bytes:
        if digest == version.digest:
            return self.registry.read_artifact(version)
        name = next(n for n, d in version.files.items() if d == digest)
        return self.registry.read_file(version, name)

    def event(self, endpoint_id: int, kind: str, revision: int | None, detail: dict[str, object]) -> None:
        with self.db.write() as s:
            if s.get(Endpoint, endpoint_id) is not None:
                s.add(EndpointEvent(endpoint_id=endpoint_id, kind=kind, revision=revision, detail=detail))

    def revision_done(self, endpoint_id: int, revision: int, status: str, message: str) -> None:
        with self.db.write() as s:
            row = s.get(Endpoint, endpoint_id)
            if row is None:
                return
            for r in s.scalars(select(EndpointRevision).where(EndpointRevision.endpoint_id == endpoint_id)):
                if r.number == revision:
                    r.status = status
                    if message:
                        r.reason = f"{r.reason}; {message}"
                elif status == "live" and r.status == "live":
                    r.status = "superseded"
            if status == "live":
                row.revision, row.state, row.message = revision, "ready", ""
            else:
                row.state = "ready" if row.revision else "failed"
                row.message = f"revision {revision} {status}: {message}"
            row.updated_at = utcnow()
            s.add(
                EndpointEvent(
                    endpoint_id=endpoint_id, kind=f"revision_{status}", revision=revision, detail={"message": message}
                )
            )

    def recover(self) -> int:
        """Deploy every endpoint's live revision again (after a restart); revisions left mid-rollout fail."""
        plans = []
        with self.db.write() as s:
            for row, project in s.execute(
                select(Endpoint, Project.name).join(Project, Project.id == Endpoint.project_id)
            ):
                for r in s.scalars(
                    select(EndpointRevision).where(
                        EndpointRevision.endpoint_id == row.id, EndpointRevision.status == "pending"
                    )
                ):
                    r.status = "failed"
                    r.reason = f"{r.reason}; the server stopped during its rollout"
                if row.revision == 0:
                    row.state = "failed"
                    continue
                row.state = "deploying"
                current = s.scalar(
                    select(EndpointRevision).where(
                        EndpointRevision.endpoint_id == row.id, EndpointRevision.number == row.revision
                    )
                )
                if current is not None:
                    plans.append((project, row, dict(current.spec)))
                latest = s.scalar(
                    select(func.max(EndpointRevision.number)).where(EndpointRevision.endpoint_id == row.id)
                )
                self._applied[row.id] = max(latest or 0, self._applied.get(row.id, 0))
        for project, row, pinned in plans:
            with tenancy.acting_as(tenancy.Caller(project=project)):
                try:
                    self._controller().apply(self._plan(row, row.revision, pinned))
                except Exception:
                    log.exception("could not redeploy endpoint %s", row.name)
        return len(plans)


def _ref(entry: dict[str, Any]) -> dict[str, Any]:
    return {"model": entry["model"], "version": str(entry["version"]), "weight": entry.get("weight", 100)}
