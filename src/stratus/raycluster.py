"""The Ray cluster a server sends jobs and replicas to (``--executor ray``, ``--placement ray``).

Connecting: ``ray.init`` with the address the operator gave, either a cluster's GCS (``HOST:PORT``, for a server
that runs on a Ray node) or a Ray Client URL (``ray://HOST:10001``). Ray's token authentication must be on
(``RAY_AUTH_MODE=token``, the token in ``RAY_AUTH_TOKEN_PATH`` or ``RAY_AUTH_TOKEN``): an open Ray cluster runs
anyone's code (ShadowRay, CVE-2023-48022), so the server refuses to connect without it.

Sealing: what a job or a replica needs (a decrypted dataset, a model's files) travels through Ray's object
store, which spills to disk under memory pressure. So it is sealed with a fresh AES-256-GCM key first; only
the 32-byte key goes inline in the task's arguments, never into the object store.

Only the standard library and cryptography are imported at module level: Ray loads when a server connects.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

#: The Ray namespace every Stratus actor lives in.
NAMESPACE = "stratus"

_lock = threading.Lock()
_connected: str | None = None


def check_auth(environ: dict[str, str] | None = None) -> None:
    """Refuse to use a Ray cluster without token authentication (see the module's docstring)."""
    env = os.environ if environ is None else environ
    if env.get("RAY_AUTH_MODE", "").lower() != "token":
        raise RuntimeError(
            "Ray's token authentication is off: set RAY_AUTH_MODE=token and the cluster's token in "
            "RAY_AUTH_TOKEN_PATH (or RAY_AUTH_TOKEN) for the server and every Ray node"
        )
    if not (env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH")):
        default = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".ray", "auth_token")  # Ray's default file
        if not os.path.exists(default):
            raise RuntimeError("RAY_AUTH_MODE=token but no token: set RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN")


def connect(address: str) -> None:
    """Connect this process to the cluster at ``address`` once; later calls with the same address do nothing."""
    global _connected
    with _lock:
        if _connected is not None:
            if _connected != address:
                raise RuntimeError(f"already connected to the Ray cluster at {_connected}, not {address}")
            return
        check_auth()
        import ray

        # log_to_driver off: the children's output is read by the executor, and Ray's own log copying would
        # put every worker's lines into the server's log.
        ray.init(
            address=address,
            namespace=NAMESPACE,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
        _connected = address
        log.info("connected to the Ray cluster at %s", address)


def seal(data: bytes, key: bytes | None = None) -> tuple[bytes, bytes]:
    """Encrypt ``data`` under ``key`` (a fresh one when None): (key, nonce + ciphertext)."""
    key = key or AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(12)
    return key, nonce + AESGCM(key).encrypt(nonce, data, None)


def unseal(key: bytes, sealed: bytes) -> bytes:
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], None)


def resources(cpus: float, memory_mb: int) -> dict[str, Any]:
    """Ray's resource request for a task or actor: CPUs, and memory when one was asked for."""
    request: dict[str, Any] = {"num_cpus": cpus}
    if memory_mb > 0:
        request["memory"] = memory_mb * 1024 * 1024
    return request


__all__ = ["NAMESPACE", "check_auth", "connect", "resources", "seal", "unseal"]
