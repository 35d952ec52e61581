"""Edge bundles: what a device needs to serve one model version offline, signed by the platform.

A bundle is a ZIP of plain names: the model's serving files (``model.onnx``, or a pipeline's spec, tokenizer
and graphs, with any versions it references as ``ref-NAME-VERSION.onnx``), ``manifest.json`` (the version,
its signature and serving config, its preprocessing parameters, and every file's SHA-256 and size) and
``manifest.sig`` (base64 of the Ed25519 signature of the manifest's exact bytes with the platform's signing
key, security/signing.py). A device checks the signature, then every file against the manifest.

Where a compressed int8 variant of the version exists (a ``quantize-*`` child, active, healthy, whose
measured quality drop is within the accuracy budget) the bundle carries the fastest such variant instead,
and the manifest says so (``variant``).

Encrypted to a device (its X25519 public key from enrollment), each file is AES-256-GCM under a key agreed
from a fresh ephemeral X25519 key (HKDF-SHA256), with the file's name as associated data: a copy of the
bundle opens on no other device. The checksums are of the plain files, and the manifest stays plain.
"""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from stratus.errors import InvalidInput
from stratus.registry.records import VersionInfo
from stratus.runtime.pipeline import PipelineSpec
from stratus.security.signing import SigningKey

FORMAT = "stratus-edge/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
ENCRYPTION = "x25519-hkdf-sha256-aes256gcm"
HKDF_INFO = b"stratus-edge-bundle/1"
INT8_METHODS = ("quantize-dynamic", "quantize-static")
#: The default accuracy budget an int8 variant must be within to replace its parent (a 1 point drop).
DEFAULT_BUDGET = 0.01


@dataclass(frozen=True)
class Served:
    """What a bundle for a reference serves: the version asked for and the one shipped (an int8 variant)."""

    requested: VersionInfo
    shipped: VersionInfo

    @property
    def etag(self) -> str:
        """Changes when the shipped version does; the same for every download of it (a device's If-None-Match)."""
        return f'"{self.shipped.model}-{self.shipped.version}-{self.shipped.digest.removeprefix("sha256:")[:16]}"'


def int8_variant(base: VersionInfo, versions: list[VersionInfo], budget: float) -> VersionInfo | None:
    """The fastest int8 child of ``base`` within ``budget`` (quality drop), or None."""
    fitting = [
        v
        for v in versions
        if v.parent_version == base.version
        and v.status == "active"
        and v.health == "healthy"
        and v.params.get("compression_method") in INT8_METHODS
        and isinstance(v.metrics.get("quality_drop"), int | float)
        and v.metrics["quality_drop"] <= budget
    ]
    return max(fitting, key=lambda v: (float(v.metrics.get("throughput_batch32") or 0.0), v.version), default=None)


def serving_files(
    version: VersionInfo,
    read_artifact: Callable[[VersionInfo], bytes],
    read_file: Callable[[VersionInfo, str], bytes],
    read_ref: Callable[[str, int], bytes],
) -> tuple[str, dict[str, bytes], dict[str, str]]:
    """The artifact's bundle name, the files serving ``version`` needs, and pipeline refs -> their file."""
    artifact = read_artifact(version)
    if version.format != "pipeline":
        return "model.onnx", {"model.onnx": artifact}, {}
    spec = PipelineSpec.parse(artifact)
    files = {"pipeline.json": artifact}
    files.update({name: read_file(version, name) for name in sorted(spec.files())})
    refs: dict[str, str] = {}
    for ref in spec.model_refs():
        name = f"ref-{ref.name}-{ref.version}.onnx"
        refs[f"{ref.name}:{ref.version}"] = name
        files[name] = read_ref(ref.name, ref.version)
    return "pipeline.json", files, refs


def check_public_key(device_public_key: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(base64.b64decode(device_public_key, validate=True))
    except ValueError:
        raise InvalidInput("the device's public key is not a base64 X25519 key (32 bytes)") from None


def _encrypt(files: dict[str, bytes], device_public_key: str) -> tuple[dict[str, bytes], dict[str, Any]]:
    peer = check_public_key(device_public_key)
    ephemeral = X25519PrivateKey.generate()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(ephemeral.exchange(peer))
    sealed = {}
    for name, data in files.items():
        nonce = secrets.token_bytes(12)
        sealed[name] = nonce + AESGCM(key).encrypt(nonce, data, name.encode())
    header = {
        "scheme": ENCRYPTION,
        "ephemeral_public_key": base64.b64encode(
            ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        ).decode(),
    }
    return sealed, header


def build(
    served: Served,
    files: tuple[str, dict[str, bytes], dict[str, str]],
    signer: SigningKey,
    *,
    project: str,
    requested_ref: str,
    device_public_key: str = "",
) -> bytes:
    """The bundle as ZIP bytes."""
    artifact, plain, refs = files
    shipped, requested = served.shipped, served.requested
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "project": project,
        "model": shipped.model,
        "requested": {"ref": requested_ref, "version": requested.version},
        "version": shipped.version,
        "digest": shipped.digest,
        "variant": None
        if shipped.version == requested.version
        else {
            "of": requested.version,
            "method": shipped.params.get("compression_method"),
            "quality_drop": shipped.metrics.get("quality_drop"),
        },
        "model_format": shipped.format,
        "artifact": artifact,
        "refs": refs,
        "signature": shipped.signature.to_dict(),
        "config": shipped.config,
        # What a client does to its input before it is sent (e.g. digits' pixel scale), as recorded in training.
        "preprocessing": {k: v for k, v in shipped.params.items() if k.startswith("input_")},
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in plain.items()
        },
        "created_at": datetime.now(UTC).isoformat(),
        "etag": served.etag,
        "key_id": signer.key_id,
        "encryption": None,
    }
    stored = plain
    if device_public_key:
        stored, manifest["encryption"] = _encrypt(plain, device_public_key)
    manifest_bytes = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    out = io.BytesIO()
    # Stored, not deflated: ONNX weights hardly compress and the device unpacks faster.
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(MANIFEST, manifest_bytes)
        archive.writestr(SIGNATURE, base64.b64encode(signer.sign(manifest_bytes)) + b"\n")
        for name, data in stored.items():
            archive.writestr(name, data)
    return out.getvalue()
