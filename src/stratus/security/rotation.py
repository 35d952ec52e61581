"""Master key rotation: a new key file, then every data key re-wrapped (the artifact store's and the inference log's).
A service over the store and the crypto module (which the store itself uses), kept out of both."""

from __future__ import annotations

import base64
import secrets

from stratus.errors import InvalidInput
from stratus.files import write_private
from stratus.security.encryption import KEY_BYTES, Keyring, decode_key, read_key_file
from stratus.security.masking import PayloadSeal
from stratus.security.signing import rewrap_signing_key
from stratus.security.webhook_secrets import rewrap_secrets
from stratus.settings import Settings
from stratus.store import Database
from stratus.store.location import open_artifacts


def rotate_master_key(settings: Settings, new_key: bytes | None = None) -> int:
    """Re-wrap every data key under a new master key; the blobs are not rewritten. Returns the count.

    With a key file: the old key is saved as ``<file>.previous``, the new key (given, or generated) becomes
    the file, every sidecar is re-wrapped, and the previous file is removed. A crash leaves both keys on
    disk; running this again (with no new key) completes the same rotation. With STRATUS_MASTER_KEY the new
    key must be given, and the variable must be set to it before the next start. Run it with the server
    stopped: a running server keeps the key it started with.
    """
    if new_key is not None and len(new_key) != KEY_BYTES:
        raise InvalidInput(f"a master key is {KEY_BYTES} bytes (base64 in the file), not {len(new_key)}")
    path = settings.resolved_master_key_file
    previous_path = path.with_name(path.name + ".previous")
    if settings.master_key is not None:
        if new_key is None:
            raise InvalidInput("the master key comes from STRATUS_MASTER_KEY: give the new key with --new-key-file")
        old = decode_key(settings.master_key.get_secret_value(), "STRATUS_MASTER_KEY")
        keyring = Keyring(new_key, [old])
    else:
        current = Keyring.from_settings(settings).current
        if previous_path.exists() and new_key is None:
            keyring = Keyring(current, [read_key_file(previous_path)])  # finish an interrupted rotation
        else:
            if not previous_path.exists():
                write_private(previous_path, base64.b64encode(current) + b"\n")
            fresh = new_key or secrets.token_bytes(KEY_BYTES)
            write_private(path, base64.b64encode(fresh) + b"\n")
            keyring = Keyring(fresh, [read_key_file(previous_path), current])
    count = open_artifacts(
        settings.artifact_location, keyring, gc_grace_seconds=settings.artifact_gc_grace_seconds
    ).rewrap_all()
    db = Database(settings.resolved_database_url)
    try:
        db.migrate()
        # The inference log's batch keys are wrapped by the master key too (security/masking.py).
        count += PayloadSeal(db, keyring).rewrap()
        # So are the alert rules' webhook secrets (security/webhook_secrets.py).
        count += rewrap_secrets(db, keyring)
        # And the edge bundles' signing key (security/signing.py).
        count += rewrap_signing_key(settings.home, keyring)
    finally:
        db.dispose()
    previous_path.unlink(missing_ok=True)
    return count
