"""The alert rules' webhook secrets, sealed by the master key.

Each rule has its own secret. The server must sign with it, so it cannot keep only a hash (as it does for
API keys): the secret is sealed with the master key (AES-256-GCM through the keyring, bound to the rule's
id, so a sealed secret copied onto another rule does not open), and a master key rotation re-wraps it
(``rewrap_secrets``, called by stratus.security.rotation). The plain secret is shown once, when the rule is
created.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select

from stratus.security.encryption import Keyring
from stratus.store import Database
from stratus.store.tables import AlertRule

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of generated secrets, not a secret


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
        for row in s.scalars(select(AlertRule)):
            if keyring.wrapped_with_current(row.secret.encode()):
                continue
            plain = keyring.unwrap(row.secret.encode(), _context(row.id))
            row.secret = keyring.wrap(plain, _context(row.id)).decode()
            count += 1
    return count
