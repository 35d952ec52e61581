"""HPACK (RFC 7541) for the gRPC server: a decoder for request headers and the few encodings responses need.

Written here rather than taken whole from the ``hpack`` package because its decoder costs about 50 us per
request header block in Python, a third of a small gRPC call: this one reads indexed fields (what clients
send once they have seen a header) with a table lookup and remembers the strings it Huffman-decoded
(an API key arrives Huffman-coded with every call). The Huffman code itself is the ``hpack`` package's.
Responses are encoded as literals without indexing, so the encoder keeps no state.
"""

from __future__ import annotations

from collections import deque

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

from stratus.errors import InvalidInput

Header = tuple[str, str]

_STATIC: tuple[Header, ...] = tuple((n.decode(), v.decode()) for n, v in HeaderTable.STATIC_TABLE)
#: Huffman-decoded strings by their encoded bytes (a pure function, so any connection may share it).
_HUFFMAN_MEMO: dict[bytes, str] = {}
_HUFFMAN_MEMO_MAX = 4096
_ENTRY_OVERHEAD = 32  # RFC 7541 4.1: an entry's size is its name, its value and 32 octets


class CompressionError(InvalidInput):
    """The peer's header block cannot be decoded (or is over a limit): an HTTP/2 connection error."""


def _integer(block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    mask = (1 << prefix_bits) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
        if shift > 28:  # larger than anything a table index or a string length may be here
            raise CompressionError("HPACK integer too large")


def _string(block: bytes, pos: int) -> tuple[str, int]:
    """A string literal as text, and where the next field starts. gRPC's metadata are ASCII (binary values
    travel base64-coded), so a header that is not even UTF-8 is refused: it also keeps each table entry's
    size in octets exactly what the peer's encoder counts."""
    huffman = block[pos] & 0x80
    length, pos = _integer(block, pos, 7)
    end = pos + length
    if end > len(block):
        raise CompressionError("HPACK string runs past its header block")
    raw = block[pos:end]
    text = _HUFFMAN_MEMO.get(raw) if huffman else None
    if text is None:
        try:
            text = (decode_huffman(raw) if huffman else raw).decode()
        except UnicodeDecodeError:
            raise CompressionError("a header is not UTF-8 text") from None
        except Exception as exc:  # hpack raises its own HPACKDecodingError
            raise CompressionError("bad Huffman code in a header") from exc
        if not huffman:
            return text, end
        if len(_HUFFMAN_MEMO) >= _HUFFMAN_MEMO_MAX:
            _HUFFMAN_MEMO.clear()
        _HUFFMAN_MEMO[raw] = text
    return text, end


def _octets(header: Header) -> int:
    name, value = header
    if name.isascii() and value.isascii():
        return len(name) + len(value) + _ENTRY_OVERHEAD
    return len(name.encode()) + len(value.encode()) + _ENTRY_OVERHEAD


class Decoder:
    """One connection's HPACK decoder (its dynamic table lives as long as the connection)."""

    def __init__(self, max_table_size: int = 4096, max_list_size: int = 16384) -> None:
        self._entries: deque[Header] = deque()
        self._sizes: deque[int] = deque()  # each entry's size in octets, as the peer's encoder counts it
        self._size = 0
        self._max_size = max_table_size
        self._allowed = max_table_size  # what our SETTINGS_HEADER_TABLE_SIZE announced
        self.max_list_size = max_list_size

    def _field(self, index: int) -> Header:
        if 0 < index <= len(_STATIC):
            return _STATIC[index - 1]
        dynamic = index - len(_STATIC) - 1
        if index == 0 or dynamic >= len(self._entries):
            raise CompressionError(f"HPACK index {index} is not in the table")
        return self._entries[dynamic]

    def _add(self, header: Header) -> None:
        size = _octets(header)
        while self._entries and self._size + size > self._max_size:
            self._entries.pop()
            self._size -= self._sizes.pop()
        if size <= self._max_size:
            self._entries.appendleft(header)
            self._sizes.appendleft(size)
            self._size += size

    def _resize(self, size: int) -> None:
        if size > self._allowed:
            raise CompressionError(f"HPACK table size {size} is over the {self._allowed} allowed")
        self._max_size = size
        while self._entries and self._size > size:
            self._entries.pop()
            self._size -= self._sizes.pop()

    def decode(self, block: bytes) -> list[Header]:
        headers: list[Header] = []
        total, pos, end = 0, 0, len(block)
        try:
            while pos < end:
                first = block[pos]
                if first & 0x80:  # indexed field
                    index, pos = _integer(block, pos, 7)
                    header = self._field(index)
                elif first & 0x40:  # literal with incremental indexing
                    index, pos = _integer(block, pos, 6)
                    name, pos = _string(block, pos) if index == 0 else (self._field(index)[0], pos)
                    value, pos = _string(block, pos)
                    header = (name, value)
                    self._add(header)
                elif first & 0x20:  # dynamic table size update
                    size, pos = _integer(block, pos, 5)
                    self._resize(size)
                    continue
                else:  # literal without indexing (0000) or never indexed (0001)
                    index, pos = _integer(block, pos, 4)
                    name, pos = _string(block, pos) if index == 0 else (self._field(index)[0], pos)
                    value, pos = _string(block, pos)
                    header = (name, value)
                total += len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD  # octets for ASCII
                if total > self.max_list_size:
                    raise CompressionError(f"header list over {self.max_list_size} bytes")
                headers.append(header)
        except IndexError:
            raise CompressionError("HPACK field runs past its header block") from None
        return headers


def encode_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    mask = (1 << prefix_bits) - 1
    if value < mask:
        return bytes([first | value])
    out = bytearray([first | mask])
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: str, value: str) -> bytes:
    """One header as a literal without indexing, its name and value not Huffman-coded."""
    raw_name, raw_value = name.encode(), value.encode()
    return b"\x00" + encode_integer(len(raw_name), 7) + raw_name + encode_integer(len(raw_value), 7) + raw_value


STATUS_200 = b"\x88"  # static table entry 8, ":status: 200"
