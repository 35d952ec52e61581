"""Recognise uploads that would run code when loaded, from their bytes and name alone.

Nothing here unpickles, decompresses or extracts anything: it reads magic bytes and, for ZIP archives,
the list of member names. A valid ONNX file is a protobuf whose first byte is a field tag (0x08 for
ir_version), so none of these signatures can match one.
"""

from __future__ import annotations

import io
import re
import zipfile

ZIP_MAGIC = b"PK\x03\x04"
UNSAFE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt", ".sav")

# joblib.dump(compress=...) wraps its pickle in one of these containers.
_COMPRESSED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x04\x22\x4d\x18", "lz4"),
)
_BZIP2 = re.compile(rb"BZh[1-9]1AY&SY")
# Protocol 0 and 1 pickles have no header. They end with the STOP opcode and usually open with a
# container (dict, list, tuple) or a GLOBAL naming a class: "c<module>\n<name>\n".
_OLD_PICKLE_OPENINGS = (b"(d", b"(l", b"(t", b"(i", b"(c", b"}q", b"]q", b"}(", b"](", b")q", b"}.", b"].")
_OLD_PICKLE_GLOBAL = re.compile(rb"c[A-Za-z_][\w.]*\n[A-Za-z_][\w.]*\n")
# torch.save and torch.jit.save write "<archive name>/data.pkl" into a ZIP.
_CHECKPOINT_MEMBER = re.compile(r"(^|/)data\.pkl$")


def _is_pickle(data: bytes) -> bool:
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    return data.endswith(b".") and (data.startswith(_OLD_PICKLE_OPENINGS) or bool(_OLD_PICKLE_GLOBAL.match(data)))


def _is_zlib(data: bytes) -> bool:
    # A zlib stream as zlib itself writes it: deflate with a 32 KiB window (0x78), and a header
    # checksum that makes the first two bytes a multiple of 31. The level only changes the second byte.
    return len(data) >= 2 and data[0] == 0x78 and (data[0] << 8 | data[1]) % 31 == 0


def _compression(data: bytes) -> str | None:
    if _is_zlib(data):
        return "zlib"
    if _BZIP2.match(data):
        return "bz2"
    for magic, name in _COMPRESSED_MAGIC:
        if data.startswith(magic):
            return name
    return None


def _zip_holds_pickles(data: bytes) -> str | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError):
        # A truncated archive has no central directory; the first member's name sits in the
        # local header right after the magic, which is enough to spot a checkpoint.
        return "a PyTorch checkpoint" if b"data.pkl" in data[:512] else None
    if any(_CHECKPOINT_MEMBER.search(name) for name in names):
        return "a PyTorch checkpoint (a ZIP with a pickle inside)"
    if any(name.lower().endswith((".pkl", ".pickle", ".joblib")) for name in names):
        return "a ZIP archive holding pickles"
    return None


def sniff_unsafe(data: bytes, filename: str | None = None) -> str | None:
    """Describe what unsafe format ``data`` looks like ("a Python pickle"...), or None if it looks safe."""
    if _is_pickle(data):
        return "a Python pickle"
    compression = _compression(data)
    if compression is not None:
        return f"a file compressed with {compression} (joblib stores pickles this way)"
    if data.startswith(ZIP_MAGIC):
        found = _zip_holds_pickles(data)
        if found is not None:
            return found
    if filename and filename.lower().endswith(UNSAFE_SUFFIXES):
        return f"a {filename.rsplit('.', 1)[-1]} file, a format that holds pickles"
    return None
