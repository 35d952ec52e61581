"""Encryption at rest: AES-256-GCM envelope encryption of every artifact and dataset.

Each blob gets a fresh 256-bit data key (DEK). The blob is sealed in 1 MiB chunks, each with its own
nonce (a random 8-byte prefix plus the chunk counter) and the chunk index and a last-chunk flag as
associated data, so reordering, truncation and bit flips all fail authentication. The DEK is wrapped with
the master key (AES-256-GCM, the blob's digest as associated data, so a wrapped key cannot be moved to
another blob) and kept in a small sidecar file. Rotating the master key rewrites only the sidecars.

The master key comes from ``STRATUS_MASTER_KEY`` or a 0600 key file (default HOME/master.key, created on
first start). During a rotation the old key is kept as ``<key file>.previous`` until every sidecar is
re-wrapped, so a crash at any point leaves every blob readable, and running the rotation again finishes it.
The rotation itself orchestrates the artifact store, so it lives above it (stratus.security.rotation).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stratus.errors import IntegrityError, StratusError
from stratus.files import write_private

if TYPE_CHECKING:
    from stratus.settings import Settings

MAGIC = b"STRENC01"
CHUNK = 1024 * 1024
_TAG = 16
_PREFIX = 8
KEY_BYTES = 32


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"stratus-master-key-id" + key).hexdigest()[:16]


def decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise StratusError(f"the master key in {where} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise StratusError(f"the master key in {where} must be {KEY_BYTES} bytes, found {len(key)}")
    return key


def read_key_file(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise StratusError(
            f"master key file {path.name} must be readable by its owner only (chmod 600); it is {oct(mode)}"
        )
    return decode_key(path.read_text(), path.name)


class Keyring:
    """The current master key, plus older ones still needed to unwrap keys a rotation has not reached."""

    def __init__(self, current: bytes, previous: list[bytes] | None = None) -> None:
        self.current = current
        self.current_id = key_id(current)
        self._keys = {key_id(k): k for k in [*(previous or []), current]}

    @classmethod
    def generate(cls) -> Keyring:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        path = settings.resolved_master_key_file
        previous_path = path.with_name(path.name + ".previous")
        previous = [read_key_file(previous_path)] if previous_path.exists() else []
        if settings.master_key is not None:
            return cls(decode_key(settings.master_key.get_secret_value(), "STRATUS_MASTER_KEY"), previous)
        if not path.exists():
            # Created only if absent: when another process got there first, its key is the one.
            write_private(path, base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n", replace=False)
        return cls(read_key_file(path), previous)

    def wrap(self, dek: bytes, digest: str) -> bytes:
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self.current).encrypt(nonce, dek, digest.encode())
        record = {
            "v": 1,
            "kek": self.current_id,
            "nonce": base64.b64encode(nonce).decode(),
            "dek": base64.b64encode(sealed).decode(),
        }
        return orjson.dumps(record)

    def unwrap(self, wrapped: bytes, digest: str) -> bytes:
        try:
            record = orjson.loads(wrapped)
            kek = self._keys.get(record["kek"])
            nonce, sealed = base64.b64decode(record["nonce"]), base64.b64decode(record["dek"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise IntegrityError(f"the data key of artifact {digest} is damaged") from None
        if kek is None:
            raise IntegrityError(
                f"artifact {digest} was encrypted under master key {record['kek']}, which this server does not "
                "have: set STRATUS_MASTER_KEY or the key file to that key"
            )
        try:
            return AESGCM(kek).decrypt(nonce, sealed, digest.encode())
        except InvalidTag:
            raise IntegrityError(
                f"the data key of artifact {digest} does not authenticate under its master key"
            ) from None

    def wrapped_with_current(self, wrapped: bytes) -> bool:
        try:
            return bool(orjson.loads(wrapped).get("kek") == self.current_id)
        except (orjson.JSONDecodeError, AttributeError):
            return False


@dataclass
class Sealer:
    """Encrypts a stream chunk by chunk under one data key."""

    dek: bytes
    prefix: bytes
    index: int = 0

    @classmethod
    def new(cls) -> Sealer:
        return cls(AESGCM.generate_key(bit_length=256), secrets.token_bytes(_PREFIX))

    def header(self) -> bytes:
        return MAGIC + self.prefix

    def seal(self, chunk: bytes, last: bool) -> bytes:
        sealed = AESGCM(self.dek).encrypt(_nonce(self.prefix, self.index), chunk, _aad(self.index, last))
        self.index += 1
        return sealed


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(4, "big")


def _aad(index: int, last: bool) -> bytes:
    return b"%d|%d" % (index, int(last))


def open_sealed(source: BinaryIO, dek: bytes, digest: str) -> Iterator[bytes]:
    """Yield the plaintext chunks of a sealed blob; raise IntegrityError on any tampering or truncation."""
    header = source.read(len(MAGIC) + _PREFIX)
    if len(header) != len(MAGIC) + _PREFIX or not header.startswith(MAGIC):
        raise IntegrityError(f"artifact {digest} is not an encrypted Stratus blob; the stored file was altered")
    prefix = header[len(MAGIC) :]
    cipher = AESGCM(dek)
    index = 0
    current = source.read(CHUNK + _TAG)
    while True:
        following = source.read(CHUNK + _TAG)
        last = not following
        try:
            yield cipher.decrypt(_nonce(prefix, index), current, _aad(index, last))
        except InvalidTag:
            raise IntegrityError(
                f"artifact {digest} failed authentication (chunk {index}); the stored file was altered or truncated"
            ) from None
        if last:
            return
        current, index = following, index + 1
