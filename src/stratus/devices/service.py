"""The device registry: one-time enrollment tokens, devices with their ``edge`` keys, bundle sync and
telemetry (docs/edge.md).

A device enrolls with a token made by a ``manage`` key of a project; it gets a key of the ``edge`` scope in that
project, which may fetch bundles and send telemetry and nothing else. Revoking a device revokes its key.
Telemetry batches carry an id the device chose: a batch is counted once, in the same transaction that records
its id, so a batch sent again (the device died before it saw the answer) changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from stratus import tenancy
from stratus.devices import bundles
from stratus.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from stratus.registry import RegistryService
from stratus.security.keys import PREFIX, KeyService
from stratus.security.scopes import EDGE
from stratus.security.signing import SigningKey
from stratus.store import Database
from stratus.store.tables import ApiKey, Device, DeviceTelemetryBatch, DeviceToken, Project, UsageRecord, utcnow

TOKEN_PREFIX = "sde_"  # noqa: S105 - the prefix of generated tokens, not a secret
_TOKEN_RE = re.compile(r"sde_([0-9a-f]{12})_([A-Za-z0-9_-]{20,64})")
_DEVICE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
#: The usage rows of edge telemetry have this kind (``stratus usage --group-by kind``).
USAGE_KIND = "edge"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


@dataclass(frozen=True)
class DeviceInfo:
    id: str
    project: str
    name: str
    key_id: str
    encrypted: bool
    enrolled_at: datetime
    last_seen: datetime | None
    bundle: str
    health: str
    revoked_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project": self.project,
            "name": self.name,
            "key_id": self.key_id,
            "encrypted_bundles": self.encrypted,
            "enrolled_at": _iso(self.enrolled_at),
            "last_seen": _iso(self.last_seen),
            "bundle": self.bundle,
            "health": self.health,
            "revoked_at": _iso(self.revoked_at),
            "active": self.revoked_at is None,
        }


def _info(row: Device, project: str) -> DeviceInfo:
    return DeviceInfo(
        row.id,
        project,
        row.name,
        row.key_id,
        bool(row.public_key),
        row.enrolled_at,
        row.last_seen,
        row.bundle,
        row.health,
        row.revoked_at,
    )


class DeviceService:
    def __init__(
        self,
        db: Database,
        registry: RegistryService,
        keys: KeyService,
        signer: Callable[[], SigningKey],
        *,
        token_ttl_s: float = 86400.0,
    ) -> None:
        self.db = db
        self.registry = registry
        self.keys = keys
        self._signer = signer
        self.token_ttl_s = token_ttl_s

    @property
    def signer(self) -> SigningKey:
        return self._signer()

    # -- enrollment -------------------------------------------------------------------------------

    def create_token(self, ttl_s: float | None = None) -> dict[str, Any]:
        """A one-time token enrolling one device into the caller's project; shown this once."""
        caller = tenancy.current()
        ttl = self.token_ttl_s if ttl_s is None else ttl_s
        if not 0 < ttl <= 30 * 86400:
            raise InvalidInput("a token's lifetime is more than 0 and at most 30 days (2592000 s)")
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        expires = utcnow() + timedelta(seconds=ttl)
        with self.db.write() as s:
            project_id = s.scalar(select(Project.id).where(Project.name == caller.project))
            if project_id is None:
                raise NotFound(f"no project {caller.project!r}")
            s.add(
                DeviceToken(
                    id=token_id,
                    project_id=project_id,
                    secret_hash=hashlib.sha256(secret.encode()).hexdigest(),
                    created_by=caller.key_id or None,
                    expires_at=expires,
                )
            )
        return {"token": f"{TOKEN_PREFIX}{token_id}_{secret}", "project": caller.project, "expires_at": _iso(expires)}

    def enroll(self, token: str, name: str, public_key: str = "") -> tuple[DeviceInfo, str]:
        """Spend ``token``: a new device with its edge key, returned with the key's plaintext (shown once)."""
        match = _TOKEN_RE.fullmatch(token)
        if match is None:
            raise Unauthenticated("malformed enrollment token: expected sde_<id>_<secret>")
        if not _DEVICE_NAME_RE.fullmatch(name):
            raise InvalidInput("a device name has 1-63 lowercase letters, digits, '.', '_' or '-'")
        if public_key:
            bundles.check_public_key(public_key)
        token_id, secret = match.groups()
        key_id, key_secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        try:
            with self.db.write() as s:
                row = s.get(DeviceToken, token_id)
                digest = hashlib.sha256(secret.encode()).hexdigest()
                if row is None or not hmac.compare_digest(row.secret_hash, digest):
                    raise Unauthenticated("invalid enrollment token")
                if row.used_at is not None:
                    raise Unauthenticated("this enrollment token has been used already")
                if row.expires_at <= utcnow():
                    raise Unauthenticated("this enrollment token has expired")
                row.used_at = utcnow()
                project = s.get(Project, row.project_id)
                assert project is not None  # the foreign key cascades
                if s.scalar(select(Device.id).where(Device.project_id == project.id, Device.name == name)):
                    raise Conflict(f"project {project.name!r} has a device named {name!r} already")
                # The key row is written here, in the transaction that spends the token: a device never
                # ends up without its key, nor a key without its device. Its secret is hashed as every key's.
                s.add(
                    ApiKey(
                        id=key_id,
                        project_id=project.id,
                        name=f"device {name}",
                        secret_hash=self.keys._hash(key_secret),
                        scopes=[EDGE],
                        created_by=row.created_by,
                    )
                )
                device = Device(
                    id=secrets.token_hex(8), project_id=project.id, name=name, key_id=key_id, public_key=public_key
                )
                s.add(device)
                s.flush()
                info = _info(device, project.name)
        except sa_exc.IntegrityError:  # the same name enrolled on another server at the same moment
            raise Conflict(f"a device named {name!r} exists already") from None
        return info, f"{PREFIX}{key_id}_{key_secret}"

    # -- the registry -----------------------------------------------------------------------------

    def _query(self, project: str | None) -> Any:
        query = select(Device, Project.name).join(Project, Device.project_id == Project.id)
        return query if project is None else query.where(Project.name == project)

    def list_devices(self) -> list[DeviceInfo]:
        with self.db.read() as s:
            rows = s.execute(self._query(tenancy.current_project()).order_by(Device.enrolled_at))
            return [_info(row, project) for row, project in rows]

    def get(self, device_id: str) -> DeviceInfo:
        with self.db.read() as s:
            found = s.execute(self._query(tenancy.current_project()).where(Device.id == device_id)).first()
        if found is None:
            raise NotFound(f"no device {device_id!r}")
        return _info(*found)

    def revoke(self, device_id: str) -> DeviceInfo:
        """Revoke a device of the caller's project and its key (the key's 401 follows at once)."""
        with self.db.write() as s:
            found = s.execute(self._query(tenancy.current_project()).where(Device.id == device_id)).first()
            if found is None:
                raise NotFound(f"no device {device_id!r}")
            row = found[0]
            if row.revoked_at is None:
                row.revoked_at = utcnow()
        self.keys.revoke(row.key_id)
        return self.get(device_id)

    # -- what a device does -----------------------------------------------------------------------

    def _device_row(self, s: Any) -> Device:
        caller = tenancy.current()
        row = s.scalar(select(Device).where(Device.key_id == caller.key_id, Device.revoked_at.is_(None)))
        if row is None:
            raise Unauthenticated(f"API key {caller.key_id} belongs to no active device")
        return row  # type: ignore[no-any-return]

    def served(self, name: str, ref: str | None, budget: float = bundles.DEFAULT_BUDGET) -> bundles.Served:
        requested = self.registry.resolve(name, ref)
        variant = bundles.int8_variant(requested, self.registry.list_versions(name), budget)
        return bundles.Served(requested, variant or requested)

    def bundle(self, served: bundles.Served, ref: str, public_key: str = "") -> bytes:
        """The signed bundle of ``served`` (encrypted to ``public_key`` when given)."""
        files = bundles.serving_files(
            served.shipped,
            self.registry.read_artifact,
            self.registry.read_file,
            lambda model, version: self.registry.read_artifact(self.registry.get_version(model, version)),
        )
        project = tenancy.current_project()
        return bundles.build(
            served, files, self.signer, project=project, requested_ref=ref, device_public_key=public_key
        )

    def export(self, name: str, ref: str | None, budget: float, device_id: str | None = None) -> bytes:
        """A bundle for ``stratus export edge`` (a manage key): plain, or encrypted to one of the project's devices."""
        self.registry.check_download(name)
        public_key = ""
        if device_id is not None:
            with self.db.read() as s:
                found = s.execute(self._query(tenancy.current_project()).where(Device.id == device_id)).first()
            if found is None:
                raise NotFound(f"no device {device_id!r}")
            if not found[0].public_key:
                raise InvalidInput(f"device {device_id!r} enrolled without a public key: its bundles are plain")
            public_key = found[0].public_key
        return self.bundle(self.served(name, ref, budget), ref or "production", public_key)

    def sync(self, name: str, ref: str | None, etag: str | None) -> tuple[str, bytes | None]:
        """For the device calling: the bundle's ETag and the bundle, or None when ``etag`` is still current."""
        with self.db.write() as s:
            device = self._device_row(s)
            device.last_seen = utcnow()
            public_key = device.public_key
        served = self.served(name, ref)
        if etag is not None and etag == served.etag:
            return served.etag, None
        return served.etag, self.bundle(served, ref or "production", public_key)

    def telemetry(self, batch_id: str, records: list[dict[str, Any]], bundle: str, health: str) -> dict[str, Any]:
        """Count one batch of a device's telemetry into its project's usage, once."""
        caller = tenancy.current()
        total = sum(int(r["requests"]) for r in records)
        try:
            with self.db.write() as s:
                device = self._device_row(s)
                device.last_seen = utcnow()
                device.bundle, device.health = bundle[:128], health[:200]
                seen = s.scalar(
                    select(DeviceTelemetryBatch.id).where(
                        DeviceTelemetryBatch.device_id == device.id, DeviceTelemetryBatch.batch_id == batch_id
                    )
                )
                if seen is not None:
                    return {"batch_id": batch_id, "counted": False, "requests": 0}
                s.add(DeviceTelemetryBatch(device_id=device.id, batch_id=batch_id, requests=total))
                now = utcnow()
                for record in records:
                    s.add(
                        UsageRecord(
                            period_start=now,
                            project=caller.project,
                            key_id=caller.key_id,
                            model=record["model"],
                            endpoint=f"device:{device.name}"[:64],
                            kind=USAGE_KIND,
                            requests=int(record["requests"]),
                            items=int(record["items"]),
                            compute_ms=float(record["compute_ms"]),
                        )
                    )
        except sa_exc.IntegrityError:  # the same batch sent twice at once: the other one counted it
            return {"batch_id": batch_id, "counted": False, "requests": 0}
        return {"batch_id": batch_id, "counted": True, "requests": total}
