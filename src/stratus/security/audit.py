"""The audit log: an append-only record of every control-plane change and its result.

Rows are only ever inserted (no update or delete path exists in the code), each in its own transaction
through the store's single writer, so a change and its audit row are both visible once the response is
sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from stratus.errors import InvalidInput
from stratus.store import Database
from stratus.store.tables import AuditEvent
from stratus.tenancy import Caller

MAX_QUERY_ROWS = 1000


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    project: str | None
    key_id: str | None
    action: str
    target: str
    address: str
    status: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat() + "Z",
            "project": self.project,
            "key_id": self.key_id,
            "action": self.action,
            "target": self.target,
            "address": self.address,
            "status": self.status,
            "detail": self.detail,
        }


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self, caller: Caller | None, action: str, target: str, address: str, status: int, detail: str = ""
    ) -> None:
        with self.db.write() as s:
            s.add(
                AuditEvent(
                    project=caller.project if caller else None,
                    key_id=(caller.key_id or None) if caller else None,
                    action=action[:200],
                    target=target[:400],
                    address=address[:64],
                    status=status,
                    detail=detail[:2000],
                )
            )

    def query(
        self,
        *,
        limit: int = 100,
        since: datetime | None = None,
        key_id: str | None = None,
        project: str | None = None,
        action: str | None = None,
        failed: bool | None = None,
        before: int | None = None,
    ) -> list[AuditEntry]:
        """The newest events first. ``action``: part of the action's text; ``failed``: only refusals and errors
        (status 400 and up) or only successes; ``before``: events older than this id (the next page)."""
        if not 1 <= limit <= MAX_QUERY_ROWS:
            raise InvalidInput(f"limit must be between 1 and {MAX_QUERY_ROWS}")
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if action:
            query = query.where(AuditEvent.action.contains(action, autoescape=True))
        if failed is not None:
            query = query.where(AuditEvent.status >= 400 if failed else AuditEvent.status < 400)
        if before is not None:
            query = query.where(AuditEvent.id < before)
        if since is not None:
            query = query.where(AuditEvent.at >= since)
        if key_id is not None:
            query = query.where(AuditEvent.key_id == key_id)
        if project is not None:
            query = query.where(AuditEvent.project == project)
        with self.db.read() as s:
            return [
                AuditEntry(
                    id=row.id,
                    at=row.at,
                    project=row.project,
                    key_id=row.key_id,
                    action=row.action,
                    target=row.target,
                    address=row.address,
                    status=row.status,
                    detail=row.detail,
                )
                for row in s.scalars(query)
            ]
