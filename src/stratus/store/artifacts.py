"""Content-addressed artifact store on the local filesystem.

A blob's path is derived only from its SHA-256 digest, never from a user-supplied name. Writes go to a
temp file that is fsynced and renamed into place, so a crash leaves either the whole blob or nothing
under its final name. Every read re-hashes the bytes: a blob that changed on disk is refused.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from stratus.errors import IntegrityError, NotFound, PayloadTooLarge

DIGEST_PREFIX = "sha256:"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredArtifact:
    digest: str
    size: int


def _hex_of(digest: str) -> str:
    hex_part = digest.removeprefix(DIGEST_PREFIX)
    if not _HEX64.fullmatch(hex_part):
        raise NotFound(f"no artifact {digest!r}")
    return hex_part


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "sha256"
        self._tmp = root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        hex_part = _hex_of(digest)
        return self._blobs / hex_part[:2] / hex_part

    def put_stream(self, src: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        hasher = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "xb") as out:
                while chunk := src.read(_CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLarge(f"artifact is larger than the limit of {max_bytes} bytes")
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = DIGEST_PREFIX + hasher.hexdigest()
            final = self._path(digest)
            if final.exists():
                tmp.unlink()
            else:
                final.parent.mkdir(exist_ok=True)
                os.replace(tmp, final)
                _fsync_dir(final.parent)
            return StoredArtifact(digest=digest, size=size)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_bytes(self, data: bytes) -> StoredArtifact:
        return self.put_stream(io.BytesIO(data))

    def read(self, digest: str) -> bytes:
        """Return the blob's bytes after checking they still hash to ``digest``."""
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"artifact {digest} is missing from the artifact store") from None
        actual = DIGEST_PREFIX + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise IntegrityError(
                f"artifact checksum mismatch: expected {digest}, found {actual}; the stored file was altered or damaged"
            )
        return data

    def verified_path(self, digest: str) -> Path:
        """The blob's path after hashing the file in chunks against ``digest``.

        Lets ONNX Runtime load a large model from the file (it maps it) instead of from a bytes copy,
        which halves the memory of a loaded model. The store is ours alone; nothing rewrites a blob.
        """
        path = self._path(digest)
        hasher = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    hasher.update(chunk)
        except FileNotFoundError:
            raise IntegrityError(f"artifact {digest} is missing from the artifact store") from None
        actual = DIGEST_PREFIX + hasher.hexdigest()
        if actual != digest:
            raise IntegrityError(
                f"artifact checksum mismatch: expected {digest}, found {actual}; the stored file was altered or damaged"
            )
        return path

    def exists(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)

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
        return removed
