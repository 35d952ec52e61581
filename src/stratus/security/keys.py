"""Projects (tenants) and API keys.

A key reads ``stk_<id>_<secret>``. The id is public (it names the key in lists, audit and usage); the
secret is stored only as HMAC-SHA256(pepper, secret), where the pepper is a random server secret kept in a
0600 file outside the DB, so a stolen DB alone cannot be used to test guesses. HMAC costs about a
microsecond, so every request verifies the secret; only the DB row is cached, for ``cache_seconds``
(at most 1 s), which bounds how late a revocation made by another process takes effect. A revocation
made through this process drops the cache entry at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from stratus.errors import Conflict, InvalidInput, NotFound, StratusError, Unauthenticated
from stratus.files import write_private
from stratus.security.ratelimit import MAX_MONTHLY_ITEMS, MAX_RATE_LIMIT_RPS
from stratus.security.scopes import RANK as _RANK
from stratus.security.scopes import SCOPES as SCOPES
from stratus.security.scopes import satisfies as satisfies
from stratus.store import Database
from stratus.store.tables import ApiKey, Project, utcnow
from stratus.tenancy import DEFAULT_PROJECT, Caller

PREFIX = "stk_"
_KEY_RE = re.compile(r"stk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,64})")
_PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_KEY_NAME_RE = re.compile(r"[\w .:@-]{0,64}")


def check_scopes(scopes: list[str]) -> list[str]:
    if not scopes:
        raise InvalidInput(f"a key needs at least one scope: {', '.join(SCOPES)}")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidInput(f"unknown scope(s) {', '.join(unknown)}; scopes are {', '.join(SCOPES)}")
    return sorted(set(scopes), key=_RANK.__getitem__)


def check_project_name(name: str) -> str:
    if not _PROJECT_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid project name {name!r}: use 1-63 lowercase letters, digits and '-', "
            "starting with a letter or digit"
        )
    return name


def load_or_create_secret_file(path: Path, size: int = 32) -> bytes:
    """A random secret kept in a file only its owner can read. Refuses a file others can read."""
    data = secrets.token_bytes(size)
    if not path.exists() and write_private(path, data, replace=False):
        return data
    # It exists (or another process created it a moment ago): that one is the secret.
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise StratusError(f"{path.name} must be readable by its owner only (chmod 600); it is {oct(mode)}")
    data = path.read_bytes()
    if len(data) != size:
        raise StratusError(f"{path.name} is damaged: expected {size} bytes, found {len(data)}")
    return data


@dataclass(frozen=True)
class KeyInfo:
    id: str
    project: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rate_limit_rps: float | None
    created_by: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project": self.project,
            "name": self.name,
            "scopes": self.scopes,
            "created_at": self.created_at.isoformat() + "Z",
            "expires_at": self.expires_at.isoformat() + "Z" if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() + "Z" if self.revoked_at else None,
            "active": self.revoked_at is None and (self.expires_at is None or self.expires_at > utcnow()),
            "rate_limit_rps": self.rate_limit_rps,
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class _CachedKey:
    secret_hash: bytes
    caller: Caller
    expires_at: datetime | None
    revoked: bool
    rate_limit_rps: float | None
    fetched_at: float


@dataclass(frozen=True)
class ProjectInfo:
    id: int
    name: str
    rate_limit_rps: float | None
    monthly_item_quota: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rate_limit_rps": self.rate_limit_rps, "monthly_item_quota": self.monthly_item_quota}


class KeyService:
    def __init__(self, db: Database, pepper: bytes, *, cache_seconds: float = 0.5) -> None:
        self.db = db
        self._pepper = pepper
        self._cache_seconds = cache_seconds
        self._cache: dict[str, _CachedKey] = {}
        self._lock = threading.Lock()

    def _hash(self, secret: str) -> str:
        return hmac.new(self._pepper, secret.encode(), hashlib.sha256).hexdigest()

    # -- projects -------------------------------------------------------------------------------

    def ensure_project(self, name: str) -> ProjectInfo:
        check_project_name(name)
        try:
            with self.db.write() as s:
                row = s.scalar(select(Project).where(Project.name == name))
                if row is None:
                    row = Project(name=name)
                    s.add(row)
                    s.flush()
                return _project_info(row)
        except sa_exc.IntegrityError:  # made by another server on a shared DB a moment ago
            with self.db.read() as s:
                found = s.scalar(select(Project).where(Project.name == name))
                if found is None:
                    raise
                return _project_info(found)

    def create_project(
        self, name: str, *, rate_limit_rps: float | None = None, monthly_item_quota: int | None = None
    ) -> ProjectInfo:
        check_project_name(name)
        _check_limits(rate_limit_rps, monthly_item_quota)
        try:
            with self.db.write() as s:
                if s.scalar(select(Project.id).where(Project.name == name)) is not None:
                    raise Conflict(f"project {name!r} already exists")
                row = Project(name=name, rate_limit_rps=rate_limit_rps, monthly_item_quota=monthly_item_quota)
                s.add(row)
                s.flush()
                return _project_info(row)
        except sa_exc.IntegrityError:  # created on another server of a shared DB at the same moment
            raise Conflict(f"project {name!r} already exists") from None

    def update_project(self, name: str, changes: dict[str, Any]) -> ProjectInfo:
        _check_limits(changes.get("rate_limit_rps"), changes.get("monthly_item_quota"))
        with self.db.write() as s:
            row = s.scalar(select(Project).where(Project.name == name))
            if row is None:
                raise NotFound(f"no project {name!r}")
            for field in ("rate_limit_rps", "monthly_item_quota"):
                if field in changes:
                    setattr(row, field, changes[field])
            return _project_info(row)

    def get_project(self, name: str) -> ProjectInfo:
        with self.db.read() as s:
            row = s.scalar(select(Project).where(Project.name == name))
            if row is None:
                raise NotFound(f"no project {name!r}")
            return _project_info(row)

    def list_projects(self) -> list[ProjectInfo]:
        with self.db.read() as s:
            return [_project_info(row) for row in s.scalars(select(Project).order_by(Project.name))]

    # -- keys -----------------------------------------------------------------------------------

    def create_key(
        self,
        project: str,
        scopes: list[str],
        *,
        name: str = "",
        expires_at: datetime | None = None,
        rate_limit_rps: float | None = None,
        created_by: str | None = None,
    ) -> tuple[KeyInfo, str]:
        """Create a key and return it with its plaintext, which is shown this once and never stored."""
        scopes = check_scopes(scopes)
        if not _KEY_NAME_RE.fullmatch(name):
            raise InvalidInput("a key name has at most 64 letters, digits, spaces and . : @ - _")
        if expires_at is not None and expires_at <= utcnow():
            raise InvalidInput("expires_at must be in the future")
        _check_limits(rate_limit_rps, None)
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        with self.db.write() as s:
            project_row = s.scalar(select(Project).where(Project.name == project))
            if project_row is None:
                raise NotFound(f"no project {project!r}")
            row = ApiKey(
                id=key_id,
                project_id=project_row.id,
                name=name,
                secret_hash=self._hash(secret),
                scopes=scopes,
                expires_at=expires_at,
                rate_limit_rps=rate_limit_rps,
                created_by=created_by,
            )
            s.add(row)
            s.flush()
            info = _key_info(row, project)
        return info, f"{PREFIX}{key_id}_{secret}"

    def list_keys(self, project: str | None = None) -> list[KeyInfo]:
        with self.db.read() as s:
            query = select(ApiKey, Project.name).join(Project).order_by(ApiKey.created_at)
            if project is not None:
                query = query.where(Project.name == project)
            return [_key_info(row, name) for row, name in s.execute(query)]

    def revoke(self, key_id: str, project: str | None = None) -> KeyInfo:
        """Revoke a key. ``project`` limits the lookup to one project (404 for others' keys)."""
        with self.db.write() as s:
            query = select(ApiKey, Project.name).join(Project).where(ApiKey.id == key_id)
            if project is not None:
                query = query.where(Project.name == project)
            found = s.execute(query).first()
            if found is None:
                raise NotFound(f"no API key {key_id!r}")
            row, project_name = found
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            info = _key_info(row, project_name)
        with self._lock:
            self._cache.pop(key_id, None)
        return info

    def has_keys(self) -> bool:
        with self.db.read() as s:
            return s.scalar(select(ApiKey.id).limit(1)) is not None

    def bootstrap_admin(self) -> str | None:
        """Create the first admin key when no key exists yet; return its plaintext, else None."""
        self.ensure_project(DEFAULT_PROJECT)
        if self.has_keys():
            return None
        _, plaintext = self.create_key(DEFAULT_PROJECT, ["admin"], name="bootstrap admin")
        return plaintext

    # -- the hot path ---------------------------------------------------------------------------

    def authenticate(self, token: str) -> tuple[Caller, float | None]:
        """The caller a key acts as, and the key's own rate limit. Raises Unauthenticated."""
        match = _KEY_RE.fullmatch(token)
        if match is None:
            raise Unauthenticated("malformed API key: expected stk_<id>_<secret>")
        key_id, secret = match.groups()
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is None or now - cached.fetched_at > self._cache_seconds:
            cached = self._fetch(key_id, now)
        if cached is None or not hmac.compare_digest(cached.secret_hash, self._hash(secret).encode()):
            raise Unauthenticated("invalid API key")
        if cached.revoked:
            raise Unauthenticated(f"API key {key_id} has been revoked")
        if cached.expires_at is not None and cached.expires_at <= utcnow():
            raise Unauthenticated(f"API key {key_id} expired at {cached.expires_at.isoformat()}Z")
        return cached.caller, cached.rate_limit_rps

    def caller_of_key(self, key_id: str) -> tuple[Caller, float | None]:
        """The caller of a key known by its id, checked as ``authenticate`` checks it but without the secret: for
        a console session, which signed in with the key once and holds only its id. Raises Unauthenticated."""
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is None or now - cached.fetched_at > self._cache_seconds:
            cached = self._fetch(key_id, now)
        if cached is None:
            raise Unauthenticated(f"API key {key_id} no longer exists")
        if cached.revoked:
            raise Unauthenticated(f"API key {key_id} has been revoked")
        if cached.expires_at is not None and cached.expires_at <= utcnow():
            raise Unauthenticated(f"API key {key_id} expired at {cached.expires_at.isoformat()}Z")
        return cached.caller, cached.rate_limit_rps

    def _fetch(self, key_id: str, now: float) -> _CachedKey | None:
        with self.db.read() as s:
            found = s.execute(select(ApiKey, Project.name).join(Project).where(ApiKey.id == key_id)).first()
        if found is None:
            with self._lock:
                self._cache.pop(key_id, None)
            return None
        row, project = found
        entry = _CachedKey(
            secret_hash=row.secret_hash.encode(),
            caller=Caller(project=project, key_id=row.id, scopes=frozenset(row.scopes)),
            expires_at=row.expires_at,
            revoked=row.revoked_at is not None,
            rate_limit_rps=row.rate_limit_rps,
            fetched_at=now,
        )
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = entry
        return entry


def expiry_in(days: float | None) -> datetime | None:
    if days is None:
        return None
    if days <= 0:
        raise InvalidInput("a key's lifetime in days must be positive")
    return utcnow() + timedelta(days=days)


def _check_limits(rps: float | None, quota: int | None) -> None:
    # NaN fails every comparison, so "not (0 <= x <= max)" also refuses it; the maxima keep values sane
    # and inside what SQLite's signed 64-bit integers hold.
    if rps is not None and not 0 <= rps <= MAX_RATE_LIMIT_RPS:
        raise InvalidInput(f"rate_limit_rps must be 0 (unlimited) or positive, at most {MAX_RATE_LIMIT_RPS:g}")
    if quota is not None and not 0 <= quota <= MAX_MONTHLY_ITEMS:
        raise InvalidInput(f"monthly_item_quota must be 0 (unlimited) or positive, at most {MAX_MONTHLY_ITEMS}")


def _project_info(row: Project) -> ProjectInfo:
    return ProjectInfo(
        id=row.id, name=row.name, rate_limit_rps=row.rate_limit_rps, monthly_item_quota=row.monthly_item_quota
    )


def _key_info(row: ApiKey, project: str) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        project=project,
        name=row.name,
        scopes=list(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        rate_limit_rps=row.rate_limit_rps,
        created_by=row.created_by,
    )
