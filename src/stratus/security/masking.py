"""Masking of request payloads before they are stored, and the payload log that stores them.

Payload logging is off by default. When it is on, values of the configured fields are replaced by
``***`` and, in every string, anything that looks like an email address, a phone number or a card number
(Luhn-checked, so order numbers pass) is replaced by a tag, before the payload reaches the DB. What reaches
the DB is sealed (AES-256-GCM): each written batch has its own data key, wrapped by the master key like an
artifact's, and each row is bound to its project, so the DB file holds no payload in the clear.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
from collections.abc import Collection
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from stratus.errors import IntegrityError
from stratus.security.encryption import KEY_BYTES, Keyring
from stratus.store import Database
from stratus.store.tables import PayloadLogEntry

MASK = "***"
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by spaces or dashes.
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
# A leading + or a parenthesised area code, then at least 9 digits with separators.
_PHONE = re.compile(r"(?<![\w])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w])")
_BUFFER_LIMIT = 100
#: What a batch's wrapped data key is bound to (the artifact store binds its keys to the blob's digest).
_KEY_CONTEXT = "payload-log"


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[card]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)


def _mask_phone(match: re.Match[str]) -> str:
    # E.164 numbers have at most 15 digits; fewer than 9 is a date, a price or a count.
    return "[phone]" if 9 <= len(re.sub(r"\D", "", match.group(0))) <= 15 else match.group(0)


def mask_text(text: str) -> str:
    text = _EMAIL.sub("[email]", text)
    text = _CARD.sub(_mask_card, text)
    return _PHONE.sub(_mask_phone, text)


def mask_payload(payload: Any, fields: Collection[str]) -> Any:
    """A masked deep copy of JSON-like ``payload``."""
    names = {f.lower() for f in fields}

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            masked_input = isinstance(value.get("name"), str) and value["name"].lower() in names
            out: dict[str, Any] = {}
            for key, item in value.items():
                if str(key).lower() in names or (masked_input and key == "data"):
                    out[key] = MASK
                else:
                    out[key] = walk(item)
            return out
        if isinstance(value, list | tuple):
            return [walk(item) for item in value]
        if isinstance(value, str):
            return mask_text(value)
        return value

    return walk(payload)


class PayloadLog:
    """Masked payloads of served requests, buffered, sealed and written in batches (nothing when disabled)."""

    def __init__(self, db: Database, keyring: Keyring, *, enabled: bool, fields: list[str]) -> None:
        self.db = db
        self.keyring = keyring
        self.enabled = enabled
        self.fields = list(fields)
        self._buffer: list[PayloadLogEntry] = []
        self._lock = threading.Lock()

    def record(self, project: str, key_id: str, model: str, protocol: str, payload: dict[str, Any]) -> None:
        if not self.enabled:
            return
        # The data plane keys inputs by name, so a configured input name masks that whole input.
        masked = mask_payload(payload, self.fields)
        entry = PayloadLogEntry(project=project, key_id=key_id, model=model, protocol=protocol, payload=masked)
        with self._lock:
            self._buffer.append(entry)
            full = len(self._buffer) >= _BUFFER_LIMIT
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            entries, self._buffer = self._buffer, []
        if entries:
            self._seal(entries)
            with self.db.write() as s:
                s.add_all(entries)

    def close(self) -> None:
        self.flush()

    def seal_plain_rows(self) -> int:
        """Seal rows an older Stratus wrote in the clear (at start); returns how many."""
        with self.db.write() as s:
            rows = list(
                s.scalars(select(PayloadLogEntry).where(PayloadLogEntry.payload["sealed"].as_string().is_(None)))
            )
            self._seal(rows)
        return len(rows)

    def rewrap(self) -> int:
        """Re-wrap every batch key with the keyring's current master key (a rotation); returns how many."""
        rewrapped: dict[str, str] = {}
        with self.db.write() as s:
            for row in s.scalars(select(PayloadLogEntry)):
                sealed = row.payload.get("sealed")
                if sealed is None or self.keyring.wrapped_with_current(sealed["key"].encode()):
                    continue
                if sealed["key"] not in rewrapped:
                    dek = self.keyring.unwrap(sealed["key"].encode(), _KEY_CONTEXT)
                    rewrapped[sealed["key"]] = self.keyring.wrap(dek, _KEY_CONTEXT).decode()
                row.payload = {"sealed": {**sealed, "key": rewrapped[sealed["key"]]}}
        return len(rewrapped)

    def recent(self, project: str, limit: int = 100) -> list[dict[str, Any]]:
        self.flush()
        with self.db.read() as s:
            rows = list(
                s.scalars(
                    select(PayloadLogEntry)
                    .where(PayloadLogEntry.project == project)
                    .order_by(PayloadLogEntry.id.desc())
                    .limit(limit)
                )
            )
        keys: dict[str, bytes] = {}
        return [
            {
                "at": row.at.isoformat() + "Z",
                "key_id": row.key_id,
                "model": row.model,
                "protocol": row.protocol,
                "payload": self._open(row, keys),
            }
            for row in rows
        ]

    def _seal(self, entries: list[PayloadLogEntry]) -> None:
        dek = secrets.token_bytes(KEY_BYTES)
        wrapped = self.keyring.wrap(dek, _KEY_CONTEXT).decode()
        aead = AESGCM(dek)
        for entry in entries:
            nonce = secrets.token_bytes(12)
            data = aead.encrypt(nonce, orjson.dumps(entry.payload), entry.project.encode())
            entry.payload = {
                "sealed": {
                    "key": wrapped,
                    "nonce": base64.b64encode(nonce).decode(),
                    "data": base64.b64encode(data).decode(),
                }
            }

    def _open(self, row: PayloadLogEntry, keys: dict[str, bytes]) -> Any:
        sealed = row.payload.get("sealed")
        if sealed is None:
            return row.payload  # written in the clear before sealing existed and not yet sealed at a start
        if sealed["key"] not in keys:
            keys[sealed["key"]] = self.keyring.unwrap(sealed["key"].encode(), _KEY_CONTEXT)
        try:
            plain = AESGCM(keys[sealed["key"]]).decrypt(
                base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["data"]), row.project.encode()
            )
        except (InvalidTag, ValueError):
            raise IntegrityError(f"payload log entry {row.id} does not authenticate") from None
        return orjson.loads(plain)
