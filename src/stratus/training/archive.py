"""Safe reading of uploaded ZIP archives: never extracted to disk, names never become paths.

Refused: entries with '..' or absolute paths (zip-slip), symlinks, too many files, too many bytes once
uncompressed, and compression ratios that only a zip bomb has.
"""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from stratus.errors import InvalidInput

MAX_FILES = 50_000
MAX_TOTAL_BYTES = 512 * 1024 * 1024
MAX_RATIO = 200


@dataclass(frozen=True)
class ArchiveEntry:
    parts: tuple[str, ...]
    data: bytes


def _check_name(name: str) -> tuple[str, ...]:
    if "\x00" in name:
        raise InvalidInput(f"archive entry {name!r} has a NUL byte in its name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise InvalidInput(f"archive entry {name!r} has an absolute path; entries must be relative")
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if ".." in parts:
        raise InvalidInput(f"archive entry {name!r} climbs out of the archive with '..' (zip-slip)")
    return parts


def read_zip(data: bytes) -> Iterator[ArchiveEntry]:
    """Yield the regular files of a ZIP after checking the whole listing against the limits."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidInput("the upload is not a valid ZIP archive") from None
    infos = archive.infolist()
    files = [i for i in infos if not i.is_dir()]
    if len(files) > MAX_FILES:
        raise InvalidInput(f"the archive has {len(files)} files; at most {MAX_FILES} are accepted")
    total = 0
    for info in infos:
        _check_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise InvalidInput(f"archive entry {info.filename!r} is a symbolic link; links are refused")
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise InvalidInput(f"the archive unpacks to more than {MAX_TOTAL_BYTES} bytes (zip bomb?)")
        if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 1024 * 1024:
            raise InvalidInput(
                f"archive entry {info.filename!r} compresses {info.file_size / info.compress_size:.0f}:1, "
                f"beyond the limit of {MAX_RATIO}:1 (zip bomb?)"
            )
    for info in files:
        with archive.open(info) as handle:
            # Read at most the declared size + 1: a lying header cannot make us read more.
            content = handle.read(info.file_size + 1)
        if len(content) > info.file_size:
            raise InvalidInput(f"archive entry {info.filename!r} is larger than its header says")
        yield ArchiveEntry(_check_name(info.filename), content)
