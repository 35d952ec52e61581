"""The frames the server and an explanation worker exchange over the worker's stdin and stdout: an 8-byte
length, then a ``framing`` bundle of a JSON header (``meta``) and named arrays saved as .npy (no pickle: a
worker's answer is data, never code). Standard library and numpy only: the server imports this."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

from stratus import framing
from stratus.types import Array

_LENGTH = struct.Struct(">Q")


def encode(meta: Mapping[str, Any], arrays: Mapping[str, Array], blobs: Mapping[str, bytes] | None = None) -> bytes:
    entries = {"meta": json.dumps(meta).encode(), **{f"blob/{k}": v for k, v in (blobs or {}).items()}}
    for name, array in arrays.items():
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        entries[f"array/{name}"] = buffer.getvalue()
    body = framing.pack(entries)
    return _LENGTH.pack(len(body)) + body


def decode(body: bytes) -> tuple[dict[str, Any], dict[str, Array], dict[str, bytes]]:
    entries = framing.unpack(body)
    meta: dict[str, Any] = json.loads(entries.pop("meta"))
    arrays = {
        k.removeprefix("array/"): np.load(io.BytesIO(v), allow_pickle=False)
        for k, v in entries.items()
        if k.startswith("array/")
    }
    blobs = {k.removeprefix("blob/"): v for k, v in entries.items() if k.startswith("blob/")}
    return meta, arrays, blobs


def read_frame(stream: IO[bytes]) -> bytes | None:
    """One frame's body, or None at end of stream (the other side is gone)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    body = stream.read(length)
    return body if len(body) == length else None
