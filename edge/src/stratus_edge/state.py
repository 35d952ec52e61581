"""The runner's state folder: the device's identity and keys, the verified bundles, which one is current, and the
telemetry spool. Secrets and the current pointer go through the platform's one writer of private files
(stratus.files: 0600 from creation, atomic, fsynced)."""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from stratus.files import write_private
from stratus_edge.bundle import Verified, public_key_of

DEVICE = "device.json"
CURRENT = "current"


class State:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.bundles = root / "bundles"
        self.bundles.mkdir(exist_ok=True)
        self.spool = root / "spool"

    # -- the device -------------------------------------------------------------------------------

    def device(self) -> dict[str, Any]:
        path = self.root / DEVICE
        return dict(orjson.loads(path.read_bytes())) if path.exists() else {}

    def save_device(self, device: dict[str, Any]) -> None:
        write_private(self.root / DEVICE, orjson.dumps(device, option=orjson.OPT_INDENT_2))

    def device_key(self) -> X25519PrivateKey | None:
        raw = self.device().get("x25519_private_key")
        return X25519PrivateKey.from_private_bytes(base64.b64decode(raw)) if raw else None

    def trusted(self, extra: list[str] | None = None) -> list[Ed25519PublicKey]:
        keys = [*self.device().get("trusted_keys", []), *(extra or [])]
        return [public_key_of(k) for k in keys]

    # -- bundles ----------------------------------------------------------------------------------

    @staticmethod
    def bundle_name(verified: Verified) -> str:
        manifest = verified.manifest
        digest = hashlib.sha256(orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
        return f"{manifest['model']}-{manifest['version']}-{digest}"

    def current(self) -> Path | None:
        pointer = self.root / CURRENT
        if not pointer.exists():
            return None
        folder = self.bundles / pointer.read_text().strip()
        return folder if folder.is_dir() else None

    def make_current(self, folder: Path) -> None:
        """Point at ``folder`` (one atomic rename); keep it and the previous bundle, remove older ones."""
        previous = self.current()
        write_private(self.root / CURRENT, folder.name.encode() + b"\n")
        keep = {folder.name, previous.name if previous else ""}
        for other in self.bundles.iterdir():
            if other.name not in keep and not other.name.startswith(".incoming-"):
                shutil.rmtree(other, ignore_errors=True)
