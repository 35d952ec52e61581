"""Content-addressed, encrypted artifact store: one interface, two backends.

``Artifacts`` is what the registry sees: put a stream (sealed before it is written anywhere), read a blob
(decrypted in memory and re-hashed), and collect the blobs no row references. Two backends implement it:
``ArtifactStore``, a local folder (the default, below), and ``S3ArtifactStore`` (stratus.store.s3) for
``STRATUS_ARTIFACTS=s3://bucket/prefix``; ``open_artifacts`` picks one from the setting.

A blob's name is derived only from the SHA-256 digest of its plaintext, never from a user-supplied name.
Blobs are encrypted (stratus.security.encryption): AES-256-GCM sealed chunks under a per-blob data key,
wrapped by the master key. Locally the wrapped key sits in a sidecar ``<digest>.key``; writes go to temp
files that are fsynced and renamed into place, the sidecar before the blob, so a crash leaves either the
whole blob or nothing under its final name. Every read decrypts in memory and re-hashes: a blob that
changed at rest is refused.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator
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


class SealedWrite:
    """One blob on its way in: seals the stream chunk by chunk under a fresh data key and hashes the plaintext,
    so the digest (and size) are known once the last sealed chunk has been written."""

    def __init__(self) -> None:
        self.sealer = Sealer.new()
        self.size = 0
        self._hasher = hashlib.sha256()

    def chunks(self, src: BinaryIO, max_bytes: int | None) -> Iterator[bytes]:
        """The header, then each plaintext chunk of ``src`` sealed. Raises PayloadTooLarge as soon as the
        stream passes ``max_bytes``, before that chunk is sealed."""
        yield self.sealer.header()
        chunk = src.read(_CHUNK)
        while True:
            self.size += len(chunk)
            if max_bytes is not None and self.size > max_bytes:
                raise PayloadTooLarge(f"artifact is larger than the limit of {max_bytes} bytes")
            self._hasher.update(chunk)
            following = src.read(_CHUNK)
            yield self.sealer.seal(chunk, last=not following)
            if not following:
                return
            chunk = following

    @property
    def digest(self) -> str:
        return DIGEST_PREFIX + self._hasher.hexdigest()


def verified(chunks: Iterator[bytes], digest: str) -> bytes:
    """Join the decrypted chunks of a blob after checking they hash to ``digest``."""
    hasher = hashlib.sha256()
    parts = []
    for part in chunks:
        hasher.update(part)
        parts.append(part)
    actual = DIGEST_PREFIX + hasher.hexdigest()
    if actual != digest:
        raise IntegrityError(
            f"artifact checksum mismatch: expected {digest}, found {actual}; the stored file was altered or damaged"
        )
    return b"".join(parts)


class Artifacts(ABC):
    """The artifact store as the registry uses it, whatever holds the bytes."""

    keyring: Keyring
    #: Other servers write here too: garbage collection must be safe without this process's writer lock.
    shared: bool = False

    @abstractmethod
    def put_stream(self, src: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        """Seal and store ``src``; once this returns, the blob is complete under its digest and may be referenced."""

    def put_bytes(self, data: bytes) -> StoredArtifact:
        return self.put_stream(io.BytesIO(data))

    @abstractmethod
    def read(self, digest: str) -> bytes:
        """Decrypt the blob in memory and return its bytes after checking they hash to ``digest``."""

    @abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abstractmethod
    def delete(self, digest: str) -> None:
        """Remove a blob now, whoever may be about to reference it (tests and tools; the registry collects)."""

    @abstractmethod
    def digests(self) -> Iterator[str]: ...

    @abstractmethod
    def rewrap_all(self) -> int:
        """Re-wrap every data key with the keyring's current master key (a rotation). Blobs stay as they are."""

    @abstractmethod
    def collect_garbage(self, referenced: Callable[[], Collection[str]], only: Collection[str] | None = None) -> int:
        """Remove blobs that ``referenced()`` does not name (called after the candidates are listed, so a row
        committed before it counts) and what interrupted writes left; ``only`` limits the blobs considered.
        Returns how many objects were removed."""


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


class ArtifactStore(Artifacts):
    """The local folder backend: one server's own folder (HOME/artifacts by default)."""

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
        write = SealedWrite()
        try:
            with open(tmp, "xb") as out:
                for sealed in write.chunks(src, max_bytes):
                    out.write(sealed)
                out.flush()
                os.fsync(out.fileno())
            digest = write.digest
            final = self._path(digest)
            with self._finalize:  # two writers of the same content must not pair one's key with the other's blob
                if final.exists():
                    tmp.unlink()
                else:
                    final.parent.mkdir(exist_ok=True)
                    # The key first: a blob under its final name can always be opened.
                    _write_atomic(self._key_path(digest), self.keyring.wrap(write.sealer.dek, digest), self._tmp)
                    os.replace(tmp, final)
                    fsync_dir(final.parent)
            return StoredArtifact(digest=digest, size=write.size)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def read(self, digest: str) -> bytes:
        """Decrypt the blob in memory and return its bytes after checking they hash to ``digest``."""
        path = self._path(digest)
        try:
            wrapped = self._key_path(digest).read_bytes()
            handle = open(path, "rb")  # noqa: SIM115 - closed below, after the last chunk
        except FileNotFoundError:
            raise IntegrityError(f"artifact {digest} is missing from the artifact store") from None
        with handle:
            return verified(open_sealed(handle, self.keyring.unwrap(wrapped, digest), digest), digest)

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

    def collect_garbage(self, referenced: Callable[[], Collection[str]], only: Collection[str] | None = None) -> int:
        """No grace period here: the folder is one server's own, and its caller holds the writer lock, so no
        write of this store is between its blob and its row. A full pass (``only`` None) runs at start-up,
        before serving, and sweeps interrupted writes too."""
        removed = 0 if only is not None else self.sweep_temp()
        candidates = list(self.digests()) if only is None else [d for d in only if self.exists(d)]
        keep = set(referenced())
        for digest in candidates:
            if digest not in keep:
                self.delete(digest)
                removed += 1
        return removed
