"""The web console's sessions: a browser signs in once with an API key and then holds a random session id.

The key itself is verified by the key service (``KeyService.authenticate``) and never kept: a session row
names the key by its public id and acts as that key's caller (project and scopes). The session id is stored
only as its SHA-256 (a 256-bit random value needs no pepper: there is nothing to guess), so a copy of the
database holds no usable session. Each session has its own CSRF token (a synchronizer token, rendered into
the console's pages and checked on every state-changing request) and an absolute expiry.

Every use re-checks the key (through the key service's short cache), so revoking or expiring a key ends
its sessions: the next request of such a session finds the key dead and deletes every session of it.
The table lives here, beside the only code that uses it; its schema is the Alembic migration
``console_sessions``. Nothing here knows about HTTP or cookies (that is stratus.ui).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from stratus.errors import Forbidden, Unauthenticated
from stratus.security.access import LOCAL_USER
from stratus.security.keys import KeyService
from stratus.security.scopes import satisfies
from stratus.store import Database
from stratus.store.tables import Base, utcnow
from stratus.tenancy import Caller

#: What a key needs to sign in to the console and to see any page of it (actions need more, checked by each).
CONSOLE_SCOPE = "read"


class ConsoleSessionRow(Base):
    __tablename__ = "console_sessions"

    #: SHA-256 (hex) of the session id the browser holds; the id itself is never stored.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The API key the session signed in with ("" on a server started with --no-auth).
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    project: Mapped[str] = mapped_column(String(64))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


@dataclass(frozen=True)
class ConsoleSession:
    """A live session: who it acts as (the key's caller and rate limit) and its CSRF token."""

    caller: Caller
    key_rps: float | None
    csrf_token: str
    expires_at: datetime

    def may(self, scope: str) -> bool:
        """Whether the session's key holds ``scope`` (for showing an action; the action itself is checked again)."""
        return satisfies(self.caller.scopes, scope)


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class ConsoleSessions:
    def __init__(self, db: Database, keys: KeyService, *, auth: bool, ttl_seconds: float) -> None:
        self.db = db
        self.keys = keys
        self.auth = auth
        self.ttl = timedelta(seconds=ttl_seconds)

    def sign_in(self, api_key: str) -> tuple[str, ConsoleSession]:
        """A new session for ``api_key``: its id (for the cookie, shown nowhere else) and the session.

        Raises Unauthenticated for a key that is malformed, unknown, revoked or expired, and Forbidden for a key
        that may not read (an edge device's key, which may use its device routes only).
        """
        caller, rps = self.keys.authenticate(api_key.strip()) if self.auth else (LOCAL_USER, None)
        if not satisfies(caller.scopes, CONSOLE_SCOPE):
            raise Forbidden(f"API key {caller.key_id} cannot use the console: it needs the read scope or more")
        session_id = secrets.token_urlsafe(32)
        now = utcnow()
        row = ConsoleSessionRow(
            id_hash=session_hash(session_id),
            key_id=caller.key_id,
            project=caller.project,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + self.ttl,
        )
        with self.db.write() as s:
            # Expired sessions go as new ones come: the table holds only live ones and a few stale ones.
            s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at <= now))
            s.add(row)
        return session_id, ConsoleSession(caller, rps, row.csrf_token, row.expires_at)

    def resolve(self, session_id: str) -> ConsoleSession | None:
        """The live session behind ``session_id``; None when there is none, it expired, or its key is no longer
        valid (revoked, expired, deleted): then every session of that key is deleted."""
        with self.db.read() as s:
            row = s.get(ConsoleSessionRow, session_hash(session_id))
            found = (row.key_id, row.csrf_token, row.expires_at) if row is not None else None
        if found is None:
            return None
        key_id, csrf, expires_at = found
        if expires_at <= utcnow():
            self.sign_out(session_id)
            return None
        if not self.auth:
            return ConsoleSession(LOCAL_USER, None, csrf, expires_at)
        try:
            caller, rps = self.keys.caller_of_key(key_id)
        except Unauthenticated:
            self.end_for_key(key_id)
            return None
        return ConsoleSession(caller, rps, csrf, expires_at)

    def sign_out(self, session_id: str) -> None:
        with self.db.write() as s:
            s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.id_hash == session_hash(session_id)))

    def end_for_key(self, key_id: str) -> int:
        """Delete every session of a key (on revocation); returns how many there were."""
        with self.db.write() as s:
            ended = s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.key_id == key_id))
            return int(getattr(ended, "rowcount", 0) or 0)

    def count_for_key(self, key_id: str) -> int:
        with self.db.read() as s:
            return len(s.scalars(select(ConsoleSessionRow.id_hash).where(ConsoleSessionRow.key_id == key_id)).all())
