"""Named byte strings in one stream, handed to a child process (a compression job, a replica) on stdin so decrypted
artifacts and datasets never touch the disk. Framing: a magic line, then per entry a 2-byte name length,
the UTF-8 name, an 8-byte data length and the data."""

from __future__ import annotations

import struct

MAGIC = b"STRBUNDLE1\n"


def pack(entries: dict[str, bytes]) -> bytes:
    parts = [MAGIC]
    for name, data in entries.items():
        encoded = name.encode()
        parts += [struct.pack(">H", len(encoded)), encoded, struct.pack(">Q", len(data)), data]
    return b"".join(parts)


def unpack(blob: bytes) -> dict[str, bytes]:
    if not blob.startswith(MAGIC):
        raise ValueError("not a Stratus bundle")
    view, offset, entries = memoryview(blob), len(MAGIC), {}
    while offset < len(blob):
        if offset + 2 > len(blob):
            raise ValueError("truncated bundle")
        (name_length,) = struct.unpack_from(">H", view, offset)
        offset += 2
        name = bytes(view[offset : offset + name_length]).decode()
        offset += name_length
        if offset + 8 > len(blob):
            raise ValueError("truncated bundle")
        (size,) = struct.unpack_from(">Q", view, offset)
        offset += 8
        if offset + size > len(blob):
            raise ValueError("truncated bundle")
        entries[name] = bytes(view[offset : offset + size])
        offset += size
    return entries


__all__ = ["pack", "unpack"]
