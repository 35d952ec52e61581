"""The platform's signing key for edge bundles (Ed25519, docs/edge.md).

A device trusts a bundle because its manifest is signed with this key; the public half is published at
``/.well-known/stratus-edge-key``. The private key is a secret the server must use, so it cannot be a hash: it
is sealed by the master key (AES-256-GCM through the keyring, bound to the context ``edge-signing-key``) and
kept in ``HOME/edge-signing.key`` by the one writer of private files. A master key rotation re-wraps it.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from stratus.errors import IntegrityError
from stratus.files import write_private
from stratus.security.encryption import Keyring

FILE_NAME = "edge-signing.key"
_CONTEXT = "edge-signing-key"


class SigningKey:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        #: Names the key in manifests, so a device with several trusted keys knows which one signed.
        self.key_id = hashlib.sha256(self.public_raw).hexdigest()[:16]

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    @classmethod
    def load_or_create(cls, home: Path, keyring: Keyring) -> SigningKey:
        """The home's key, created sealed on first use; re-sealed under the current master key if needed."""
        path = home / FILE_NAME
        if not path.exists():
            fresh = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            # Created only if absent: when another process got there first, its key is the one.
            write_private(path, keyring.wrap(fresh, _CONTEXT), replace=False)
        sealed = path.read_bytes()
        raw = keyring.unwrap(sealed, _CONTEXT)
        if len(raw) != 32:
            raise IntegrityError(f"{FILE_NAME} is damaged")
        if not keyring.wrapped_with_current(sealed):
            write_private(path, keyring.wrap(raw, _CONTEXT))
        return cls(Ed25519PrivateKey.from_private_bytes(raw))


def rewrap_signing_key(home: Path, keyring: Keyring) -> int:
    """Re-seal the signing key under the keyring's current master key (a rotation); 1 if there was one."""
    path = home / FILE_NAME
    if not path.exists():
        return 0
    write_private(path, keyring.wrap(keyring.unwrap(path.read_bytes(), _CONTEXT), _CONTEXT))
    return 1
