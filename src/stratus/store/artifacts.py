"""Content-addressed, encrypted artifact store on the local filesystem.

A blob's path is derived only from the SHA-256 digest of its plaintext, never from a user-supplied name.
Blobs are encrypted (stratus.security.encryption): the file holds AES-256-GCM sealed chunks, and its
wrapped data key sits in a sidecar ``<digest>.key``. Writes go to temp files that are fsynced and renamed
into place, the sidecar before the blob, so a crash leaves either the whole blob or nothing under its
final name. Every read decrypts in memory and re-hashes: a blob that changed on disk is refused.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from stratus.errors import IntegrityError, NotFound, PayloadTooLarge
from stratus.files import fsync_dir
from stratus.security.encryption import CHUNK, Keyring, Sealer, open_sealed

DIGEST_PREFIX = "sha256:"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = CHUNK
_KEY_SUFFIX = ".key"


@dataclass(frozen=True)
class StoredArtifact:
    digest: str
    size: int


def _hex_of(digest: str) -> str:
    hex_part = digest.removeprefix(DIGEST_PREFIX)
    if not _HEX64.fullmatch(hex_part):
        raise NotFound(f"no artifact {digest!r}")
    return hex_part


def _write_atomic(path: Path, data: bytes, tmp_dir: Path) -> None:
    tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
    try:
        with open(tmp, "xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ArtifactStore:
    def __init__(self, root: Path, keyring: Keyring) -> None:
        self.root = root
        self.keyring = keyring
        self._finalize = threading.Lock()
        self._blobs = root / "sha256"
        self._tmp = root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        hex_part = _hex_of(digest)
        return self._blobs / hex_part[:2] / hex_part

    def _key_path(self, digest: str) -> Path:
        path = self._path(digest)
        return path.with_name(path.name + _KEY_SUFFIX)

    def put_stream(self, src: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        hasher = hashlib.sha256()
        sealer = Sealer.new()
        size = 0
        try:
            with open(tmp, "xb") as out:
                out.write(sealer.header())
                chunk = src.read(_CHUNK)
                while True:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLarge(f"artifact is larger than the limit of {max_bytes} bytes")
                    hasher.update(chunk)
                    following = src.read(_CHUNK)
                    out.write(sealer.seal(chunk, last=not following))
                    if not following:
                        break
                    chunk = following
                out.flush()
                os.fsync(out.fileno())
            digest = DIGEST_PREFIX + hasher.hexdigest()
            final = self._path(digest)
            with self._finalize:  # two writers of the same content must not pair one's key with the other's blob
                if final.exists():
                    tmp.unlink()
                else:
                    final.parent.mkdir(exist_ok=True)
                    # The key first: a blob under its final name can always be opened.
                    _write_atomic(self._key_path(digest), self.keyring.wrap(sealer.dek, digest), self._tmp)
                    os.replace(tmp, final)
                    fsync_dir(final.parent)
            return StoredArtifact(digest=digest, size=size)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_bytes(self, data: bytes) -> StoredArtifact:
        return self.put_stream(io.BytesIO(data))

    def read(self, digest: str) -> bytes:
        """Decrypt the blob in memory and return its bytes after checking they hash to ``digest``."""
        path = self._path(digest)
        try:
            wrapped = self._key_path(digest).read_bytes()
            handle = open(path, "rb")  # noqa: SIM115 - closed below, after the last chunk
        except FileNotFoundError:
            raise IntegrityError(f"artifact {digest} is missing from the artifact store") from None
        hasher = hashlib.sha256()
        parts = []
        with handle:
            for part in open_sealed(handle, self.keyring.unwrap(wrapped, digest), digest):
                hasher.update(part)
                parts.append(part)
        actual = DIGEST_PREFIX + hasher.hexdigest()
        if actual != digest:
            raise IntegrityError(
                f"artifact checksum mismatch: expected {digest}, found {actual}; the stored file was altered or damaged"
            )
        return b"".join(parts)

    def rewrap_all(self) -> int:
        """Re-wrap every data key with the keyring's current master key (a rotation). Blobs stay as they are."""
        count = 0
        for digest in self.digests():
            key_path = self._key_path(digest)
            wrapped = key_path.read_bytes()
            if not self.keyring.wrapped_with_current(wrapped):
                _write_atomic(key_path, self.keyring.wrap(self.keyring.unwrap(wrapped, digest), digest), self._tmp)
                count += 1
        for directory in self._blobs.glob("??"):
            fsync_dir(directory)
        return count

    def exists(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)
        self._key_path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[str]:
        for path in self._blobs.glob("??/*"):
            if _HEX64.fullmatch(path.name):
                yield DIGEST_PREFIX + path.name

    def sweep_temp(self) -> int:
        """Remove temp files left by writes that a crash interrupted. Call only when no write is running."""
        removed = 0
        for path in self._tmp.glob("*.part"):
            path.unlink(missing_ok=True)
            removed += 1
        for key_path in self._blobs.glob(f"??/*{_KEY_SUFFIX}"):  # a key whose blob never landed
            if not key_path.with_name(key_path.name.removesuffix(_KEY_SUFFIX)).exists():
                key_path.unlink(missing_ok=True)
                removed += 1
        return removed
