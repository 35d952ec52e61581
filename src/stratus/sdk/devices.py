"""Edge calls of the Python client: enrollment tokens, the device registry, edge bundle exports (docs/edge.md)."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

from stratus.errors import InvalidInput

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def split_model_ref(text: str) -> tuple[str, str | None]:
    """``digits@production`` or ``digits:3`` -> (name, ref); a bare name -> (name, None)."""
    for separator in ("@", ":"):
        if separator in text:
            name, _, ref = text.partition(separator)
            return name, ref or None
    return text, None


def extract_bundle(data: bytes, out: Path) -> list[Path]:
    """Unpack an edge bundle into ``out``: its entries are plain file names, anything else is refused."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for entry in archive.infolist():
            if not _PLAIN_NAME.fullmatch(entry.filename):
                raise InvalidInput(f"refusing to extract {entry.filename[:80]!r} from the bundle")
            target = out / entry.filename
            target.write_bytes(archive.read(entry))
            written.append(target)
    return written


class DeviceCalls:
    """Mixed into ``Client``; every call goes through its ``_json`` / ``request``."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def request(self, method: str, path: str, **kwargs: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def create_device_token(self, ttl_seconds: float | None = None) -> dict[str, Any]:
        """A one-time token enrolling one device into the key's project (``stratus-edge enroll --token``)."""
        body = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        result: dict[str, Any] = self._json("POST", "/api/v1/device-tokens", json=body)
        return result

    def list_devices(self) -> list[dict[str, Any]]:
        devices: list[dict[str, Any]] = self._json("GET", "/api/v1/devices")["devices"]
        return devices

    def get_device(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/devices/{device_id}")
        return result

    def revoke_device(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("DELETE", f"/api/v1/devices/{device_id}")
        return result

    def edge_signing_key(self) -> dict[str, Any]:
        """The platform's bundle signing key (Ed25519, base64), to pin on devices (``--trust-key``)."""
        result: dict[str, Any] = self._json("GET", "/.well-known/stratus-edge-key")
        return result

    def export_edge(self, model: str, out: Path, *, budget: float = 0.01, device: str | None = None) -> list[Path]:
        """Write the signed edge bundle of ``model`` (``NAME``, ``NAME@ALIAS`` or ``NAME:VERSION``) into ``out``."""
        name, ref = split_model_ref(model)
        params: dict[str, Any] = {"budget": budget}
        if ref is not None:
            params["ref"] = ref
        if device is not None:
            params["device"] = device
        response = self.request("GET", f"/api/v1/models/{name}/edge-bundle", params=params)
        return extract_bundle(response.content, out)
