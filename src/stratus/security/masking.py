"""Masking of request payloads before they are stored, and the seal of what the inference log stores.

Payload capture is off by default. When it is on, values of the configured fields are replaced by ``***``
and, in every string, anything that looks like an email address, a phone number or a card number
(Luhn-checked, so order numbers pass) is replaced by a tag, before the payload reaches the DB. What reaches
the DB is sealed (AES-256-GCM, ``PayloadSeal``): each written batch has its own data key, wrapped by the
master key like an artifact's, and each sealed message is bound to its project (and model), so the DB file
holds no payload in the clear. The inference log itself is stratus.monitoring.log.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Collection
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from stratus.errors import IntegrityError
from stratus.security.encryption import KEY_BYTES, Keyring
from stratus.store import Database
from stratus.store.tables import InferenceLogKey, PayloadLogEntry

MASK = "***"
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by spaces or dashes.
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
# A leading + or a parenthesised area code, then at least 9 digits with separators.
_PHONE = re.compile(r"(?<![\w])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w])")
#: What a batch's wrapped data key is bound to (the artifact store binds its keys to the blob's digest). The
#: name is the payload log's, which the inference log replaced: its rows carry over with their keys.
_KEY_CONTEXT = "payload-log"
NONCE_BYTES = 12


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


class PayloadSeal:
    """AES-256-GCM for the inference log: a data key per written batch (a row of inference_log_keys, wrapped
    by the master key), a random nonce per sealed message, and the caller's context as associated data."""

    def __init__(self, db: Database, keyring: Keyring) -> None:
        self.db = db
        self.keyring = keyring
        self._keys: dict[int, AESGCM] = {}

    def new_key(self, session: Session) -> tuple[int, AESGCM]:
        """A fresh data key, stored wrapped in ``session`` (the same transaction as what it seals)."""
        dek = secrets.token_bytes(KEY_BYTES)
        row = InferenceLogKey(wrapped=self.keyring.wrap(dek, _KEY_CONTEXT).decode())
        session.add(row)
        session.flush()
        aead = AESGCM(dek)
        self._keys[row.id] = aead
        return row.id, aead

    @staticmethod
    def seal(aead: AESGCM, plain: bytes, context: bytes) -> tuple[bytes, bytes]:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce, aead.encrypt(nonce, plain, context)

    def open(self, key_ref: int, nonce: bytes, data: bytes, context: bytes, what: str) -> bytes:
        aead = self._keys.get(key_ref)
        if aead is None:
            with self.db.read() as s:
                row = s.get(InferenceLogKey, key_ref)
            if row is None:
                raise IntegrityError(f"{what}: its data key is missing")
            aead = AESGCM(self.keyring.unwrap(row.wrapped.encode(), _KEY_CONTEXT))
            self._keys[key_ref] = aead
        try:
            return aead.decrypt(nonce, data, context)
        except (InvalidTag, ValueError):
            raise IntegrityError(f"{what} does not authenticate") from None

    def rewrap(self) -> int:
        """Re-wrap every batch key with the keyring's current master key (a rotation); returns how many."""
        count = 0
        with self.db.write() as s:
            for row in s.scalars(select(InferenceLogKey)):
                if self.keyring.wrapped_with_current(row.wrapped.encode()):
                    continue
                dek = self.keyring.unwrap(row.wrapped.encode(), _KEY_CONTEXT)
                row.wrapped = self.keyring.wrap(dek, _KEY_CONTEXT).decode()
                count += 1
            # Rows of the payload log that the inference log has not taken over yet (a rotation before the
            # first start of a newer server) keep their own wrapped keys.
            rewrapped: dict[str, str] = {}
            for entry in s.scalars(select(PayloadLogEntry)):
                sealed = entry.payload.get("sealed")
                if sealed is None or self.keyring.wrapped_with_current(sealed["key"].encode()):
                    continue
                if sealed["key"] not in rewrapped:
                    dek = self.keyring.unwrap(sealed["key"].encode(), _KEY_CONTEXT)
                    rewrapped[sealed["key"]] = self.keyring.wrap(dek, _KEY_CONTEXT).decode()
                entry.payload = {"sealed": {**sealed, "key": rewrapped[sealed["key"]]}}
            count += len(rewrapped)
        return count

    def open_legacy(self, entry: PayloadLogEntry) -> Any:
        """The payload of a row the payload log wrote (sealed, or in the clear before sealing existed)."""
        sealed = entry.payload.get("sealed")
        if sealed is None:
            return entry.payload
        dek = self.keyring.unwrap(sealed["key"].encode(), _KEY_CONTEXT)
        try:
            plain = AESGCM(dek).decrypt(
                base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["data"]), entry.project.encode()
            )
        except (InvalidTag, ValueError):
            raise IntegrityError(f"payload log entry {entry.id} does not authenticate") from None
        return orjson.loads(plain)
