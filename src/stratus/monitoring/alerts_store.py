"""Tables of alert rules, their fire/resolve events and the webhook delivery log, and the rules' secrets.

Each rule has its own webhook secret. The server must sign with it, so it cannot keep only a hash (as it
does for API keys): the secret is sealed with the master key (AES-256-GCM through the keyring, bound to the
rule's id, so a sealed secret copied onto another rule does not open) and re-wrapped by a master key
rotation (``rewrap_secrets``). The plain secret is returned once, when the rule is created.

The tables live here, beside the only code that uses them; their schema is the Alembic migration
``alerts_rules_events_deliveries``.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, mapped_column

from stratus.security.encryption import Keyring
from stratus.store import Database
from stratus.store.tables import Base, utcnow

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of generated secrets, not a secret


class AlertRuleRow(Base):
    """A rule on one metric of one model or endpoint, its webhook, and its evaluation state."""

    __tablename__ = "alert_rules"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_alert_rules_project_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    target_kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(16))
    op: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float] = mapped_column(Float)
    for_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The webhook secret sealed by the master key (the keyring's wrapped-key JSON).
    secret: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(16), default="inactive")
    active_since: Mapped[datetime | None] = mapped_column(nullable=True)
    fired_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AlertEventRow(Base):
    """A rule fired or resolved. Kept after the rule is deleted (the rule's name is copied)."""

    __tablename__ = "alert_events"
    __table_args__ = (Index("ix_alert_events_project_at", "project_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    rule_id: Mapped[str] = mapped_column(String(32))
    rule_name: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    target_kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(64))
    condition: Mapped[str] = mapped_column(String(200))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: none (no webhook), pending, delivered or failed.
    delivery: Mapped[str] = mapped_column(String(16), default="none")


class AlertDeliveryRow(Base):
    """One attempt to deliver an event's webhook: the receiver's status, or why no answer came."""

    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("alert_events.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")


def _context(rule_id: str) -> str:
    return f"alert-rule:{rule_id}"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def seal_secret(keyring: Keyring, rule_id: str, secret: str) -> str:
    return keyring.wrap(secret.encode(), _context(rule_id)).decode()


def open_secret(keyring: Keyring, rule_id: str, sealed: str) -> bytes:
    return keyring.unwrap(sealed.encode(), _context(rule_id))


def rewrap_secrets(db: Database, keyring: Keyring) -> int:
    """Re-seal every rule's secret with the keyring's current master key (a rotation); returns how many."""
    count = 0
    with db.write() as s:
        for row in s.scalars(select(AlertRuleRow)):
            if keyring.wrapped_with_current(row.secret.encode()):
                continue
            plain = keyring.unwrap(row.secret.encode(), _context(row.id))
            row.secret = keyring.wrap(plain, _context(row.id)).decode()
            count += 1
    return count
