"""The one writer of private files (secrets, keys): readable by the owner only from the first byte, never
seen half-written, and durable (the file and its directory entry are fsynced)."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


def write_private(path: Path, data: bytes, *, replace: bool = True) -> bool:
    """Write ``data`` to ``path`` with mode 0600 from creation.

    The bytes go to a temporary file beside it first, so a reader sees the old file or the whole new one.
    ``replace=True`` swaps it in over any existing file. ``replace=False`` creates the file only if it does
    not exist (a hard link, which fails when another process got there first) and returns False then.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # after a link, the temporary name; after a replace, already gone
    fsync_dir(path.parent)
    return True


def fsync_dir(directory: Path) -> None:
    """Make a rename or link in ``directory`` durable (its entry is only on disk once the directory is)."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
