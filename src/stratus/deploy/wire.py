"""The client side of the V2 binary tensor extension, which the router speaks to replicas: every input
and output travels as raw little-endian bytes after a small JSON header."""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np
import orjson

from stratus.errors import InvalidInput
from stratus.types import V2_TO_NUMPY, Tensor, decode_bytes_tensor, encode_bytes_tensor, v2_datatype


def _raw(array: Tensor, datatype: str) -> bytes:
    if datatype == "BYTES":
        return encode_bytes_tensor(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def encode_request(
    inputs: dict[str, Tensor], outputs: list[str] | None = None, timeout_ms: float | None = None
) -> tuple[bytes, int]:
    """The body and its JSON header's length (the Inference-Header-Content-Length header). A deadline
    travels as Triton's ``timeout`` parameter, in microseconds."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in inputs.items():
        datatype = v2_datatype(array.dtype)
        chunk = _raw(array, datatype)
        entries.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(chunk)},
            }
        )
        chunks.append(chunk)
    parameters: dict[str, Any] = {"binary_data_output": True}
    if timeout_ms is not None:
        parameters["timeout"] = max(1, int(timeout_ms * 1000))
    head: dict[str, Any] = {"inputs": entries, "parameters": parameters}
    if outputs:
        head["outputs"] = [{"name": name, "parameters": {"binary_data": True}} for name in outputs]
    header = orjson.dumps(head)
    return b"".join((header, *chunks)), len(header)


def decode_response(body: bytes, header_length: int | None) -> tuple[str, dict[str, Tensor]]:
    """The serving version and the outputs of a V2 response (binary or JSON outputs)."""
    view = memoryview(body)
    head = orjson.loads(view[:header_length] if header_length is not None else view)
    offset = header_length or 0
    outputs: dict[str, Tensor] = {}
    for entry in head.get("outputs", []):
        name, datatype, shape = entry["name"], entry["datatype"], tuple(entry["shape"])
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is None:
            data = entry.get("data", [])
            dtype = V2_TO_NUMPY[datatype]
            if datatype == "BYTES":
                array = np.empty(len(data), dtype=object)
                array[:] = [v.encode() if isinstance(v, str) else v for v in data]
                outputs[name] = array.reshape(shape)
            else:
                outputs[name] = np.asarray(data, dtype=dtype).reshape(shape)
            continue
        chunk = view[offset : offset + size]
        offset += size
        if len(chunk) != size:
            raise InvalidInput(f"a replica's response is truncated in output {name!r}")
        if datatype == "BYTES":
            outputs[name] = decode_bytes_tensor(chunk, prod(shape), name).reshape(shape)
        else:
            dtype = V2_TO_NUMPY[datatype].newbyteorder("<")
            outputs[name] = np.frombuffer(chunk, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return str(head.get("model_version", "")), outputs
