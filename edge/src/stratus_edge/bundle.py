"""Bundles on the device: unpack, verify (signature over the manifest, then every file's SHA-256) and load.

A bundle is accepted only whole: its manifest must be signed by a trusted platform key, and every file the
manifest names must be present with its checksum (after decryption, for a bundle encrypted to this device).
The plain model bytes exist only in memory while ONNX Runtime loads them; on disk an encrypted bundle stays
encrypted. What fails is refused with a message that says why, and the bundle in use stays.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT = "stratus-edge/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
ENCRYPTION = "x25519-hkdf-sha256-aes256gcm"
HKDF_INFO = b"stratus-edge-bundle/1"
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: A bundle's files together may not exceed this (a ZIP bomb is refused before it is written).
MAX_BUNDLE_BYTES = 2 * 1024**3


class BundleRefused(Exception):
    """A bundle that failed verification: never served."""


@dataclass(frozen=True)
class Verified:
    folder: Path
    manifest: dict[str, Any]
    files: dict[str, bytes]

    @property
    def label(self) -> str:
        return f"{self.manifest['model']}:{self.manifest['version']}"


def public_key_of(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip(), validate=True))
    except ValueError:
        raise BundleRefused("a trusted key is not a base64 Ed25519 public key") from None


def key_id_of(key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def unpack(data: bytes, parent: Path) -> Path:
    """Write a bundle's ZIP into a new folder under ``parent``; only plain file names, bounded in size."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise BundleRefused("not a bundle: the download is not a ZIP archive") from None
    entries = archive.infolist()
    if sum(e.file_size for e in entries) > MAX_BUNDLE_BYTES:
        raise BundleRefused("the bundle is larger than 2 GiB unpacked")
    folder = parent / f".incoming-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    try:
        for entry in entries:
            if not _FILE_NAME.fullmatch(entry.filename):
                raise BundleRefused(f"the bundle holds an entry with a path: {entry.filename[:80]!r}")
            (folder / entry.filename).write_bytes(archive.read(entry))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _decryptor(manifest: dict[str, Any], device_key: X25519PrivateKey | None) -> AESGCM | None:
    header = manifest.get("encryption")
    if header is None:
        return None
    if not isinstance(header, dict) or header.get("scheme") != ENCRYPTION:
        raise BundleRefused("the bundle is encrypted with an unknown scheme")
    if device_key is None:
        raise BundleRefused("the bundle is encrypted to a device, and this runner has no device key")
    try:
        peer = X25519PublicKey.from_public_bytes(base64.b64decode(header["ephemeral_public_key"], validate=True))
    except (KeyError, ValueError):
        raise BundleRefused("the bundle's encryption header is damaged") from None
    secret = device_key.exchange(peer)
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(secret))


def verify(folder: Path, trusted: list[Ed25519PublicKey], device_key: X25519PrivateKey | None = None) -> Verified:
    """The bundle in ``folder``, checked: signature, format, every file's size and SHA-256. Raises BundleRefused."""
    try:
        manifest_bytes = (folder / MANIFEST).read_bytes()
        signature = base64.b64decode((folder / SIGNATURE).read_bytes().strip(), validate=True)
    except FileNotFoundError as exc:
        raise BundleRefused(f"the bundle has no {Path(exc.filename or '').name}") from None
    except ValueError:
        raise BundleRefused("the bundle's signature file is not base64") from None
    if not any(_signed_by(key, signature, manifest_bytes) for key in trusted):
        raise BundleRefused("the manifest's signature does not verify with any trusted platform key")
    manifest = orjson.loads(manifest_bytes)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleRefused(f"not a bundle of format {FORMAT}")
    aead = _decryptor(manifest, device_key)
    files: dict[str, bytes] = {}
    for name, entry in manifest["files"].items():
        if not _FILE_NAME.fullmatch(name) or name in (MANIFEST, SIGNATURE):
            raise BundleRefused(f"the manifest names a file with a path: {name[:80]!r}")
        try:
            data = (folder / name).read_bytes()
        except FileNotFoundError:
            raise BundleRefused(f"file {name!r} of the manifest is missing") from None
        if aead is not None:
            try:
                data = aead.decrypt(data[:12], data[12:], name.encode())
            except (InvalidTag, ValueError):
                raise BundleRefused(f"file {name!r} does not decrypt with this device's key") from None
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BundleRefused(f"file {name!r} fails its checksum")
        files[name] = data
    return Verified(folder, manifest, files)


def _signed_by(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def install(folder: Path, bundles: Path, name: str) -> Path:
    """Move a verified folder to ``bundles/name`` (kept if already there) and return it."""
    target = bundles / name
    if target.exists():
        shutil.rmtree(folder, ignore_errors=True)
        return target
    os.replace(folder, target)
    return target
