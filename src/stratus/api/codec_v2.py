"""Open Inference Protocol (KServe V2) bodies to and from numpy: JSON, and Triton's binary tensor
data extension. Pure functions over bytes: the HTTP handler owns headers and status codes."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np
import orjson

from stratus.errors import InvalidInput
from stratus.types import V2_TO_NUMPY, v2_datatype

Tensor = np.ndarray[Any, Any]
_LENGTH = struct.Struct("<I")


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: dict[str, Tensor]
    outputs: list[RequestedOutput] | None
    binary_output: bool
    parameters: dict[str, Any] = field(default_factory=dict)


def decode_bytes_tensor(buf: bytes | memoryview, count: int, name: str = "") -> Tensor:
    """BYTES elements are each a 4-byte little-endian length followed by that many bytes."""
    values: list[bytes] = []
    view = memoryview(buf)
    offset = 0
    for _ in range(count):
        if offset + 4 > len(view):
            raise InvalidInput(f"input {name!r}: binary BYTES data ends inside an element length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(f"input {name!r}: binary BYTES element runs past the end of its data")
        values.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(view):
        raise InvalidInput(f"input {name!r}: {len(view) - offset} bytes left over after {count} BYTES elements")
    array = np.empty(count, dtype=object)
    array[:] = values
    return array


def encode_bytes_tensor(values: Tensor) -> bytes:
    parts: list[bytes] = []
    for value in values.ravel():
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item))
    return flat


def _json_tensor(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> Tensor:
    count = prod(shape)
    if datatype == "BYTES":
        flat = _flatten(data)
        if len(flat) != count:
            raise InvalidInput(f"input {name!r}: shape {list(shape)} needs {count} values but {len(flat)} were given")
        array = np.empty(count, dtype=object)
        try:
            array[:] = [v.encode("utf-8") if isinstance(v, str) else _not_text(name, v) for v in flat]
        except InvalidInput:
            raise
        return array.reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    try:
        raw = np.array(data)
    except ValueError:
        raise InvalidInput(f"input {name!r}: nested data is ragged (rows of different lengths)") from None
    if raw.size != count:
        raise InvalidInput(f"input {name!r}: shape {list(shape)} needs {count} values but {raw.size} were given")
    kind = raw.dtype.kind
    if datatype == "BOOL":
        if kind != "b" and raw.size:
            raise InvalidInput(f"input {name!r}: BOOL data must be true/false")
    elif kind not in "biuf" and raw.size:
        raise InvalidInput(f"input {name!r}: {datatype} data must be numbers, got {_describe(raw)}")
    elif (kind == "f" and dtype.kind in "iu") and (
        not np.all(np.isfinite(raw)) or not np.array_equal(raw, np.trunc(raw))
    ):
        raise InvalidInput(f"input {name!r}: {datatype} data must be whole numbers")
    try:
        with np.errstate(over="raise", invalid="raise"):
            array = raw.astype(dtype, casting="unsafe") if raw.size else np.zeros(0, dtype)
    except (OverflowError, FloatingPointError):
        raise InvalidInput(f"input {name!r}: values do not fit in {datatype}") from None
    if dtype.kind in "iu" and raw.size and kind in "iu" and not np.array_equal(array, raw):
        raise InvalidInput(f"input {name!r}: values do not fit in {datatype}")
    return array.reshape(shape)


def _not_text(name: str, value: Any) -> bytes:
    raise InvalidInput(f"input {name!r}: BYTES data must be strings, got {type(value).__name__}")


def _describe(raw: Tensor) -> str:
    return "strings" if raw.dtype.kind in "US" else "mixed values" if raw.dtype.kind == "O" else str(raw.dtype)


def _binary_tensor(name: str, datatype: str, shape: tuple[int, ...], chunk: memoryview) -> Tensor:
    count = prod(shape)
    if datatype == "BYTES":
        return decode_bytes_tensor(chunk, count, name).reshape(shape)
    dtype = V2_TO_NUMPY[datatype].newbyteorder("<")
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise InvalidInput(
            f"input {name!r}: binary_data_size is {len(chunk)} bytes but shape {list(shape)} of {datatype} "
            f"needs {expected}"
        )
    # A read-only view of the request body: no copy, and nothing downstream writes into inputs.
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _shape(name: str, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers, got {raw!r}")
    return tuple(raw)


def _params(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: parameters must be an object")
    return raw


def decode_infer_request(body: bytes, header_length: int | None) -> InferRequest:
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if header_length < 0 or header_length > len(body):
            raise InvalidInput(f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes")
        header, binary = body[:header_length], memoryview(body)[header_length:]
    try:
        payload = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput("request body must be a JSON object with an 'inputs' list")
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request needs 'inputs': a non-empty list of tensors")
    inputs: dict[str, Tensor] = {}
    offset = 0
    for raw in raw_inputs:
        if not isinstance(raw, dict):
            raise InvalidInput("each item of 'inputs' must be an object with name, shape, datatype and data")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput("an input has no 'name'")
        if name in inputs:
            raise InvalidInput(f"input {name!r} is given twice")
        datatype = raw.get("datatype")
        if datatype not in V2_TO_NUMPY:
            raise InvalidInput(
                f"input {name!r}: unknown datatype {datatype!r}; expected one of {', '.join(V2_TO_NUMPY)}"
            )
        shape = _shape(name, raw.get("shape"))
        params = _params(raw.get("parameters"), f"input {name!r}")
        size = params.get("binary_data_size")
        if size is not None:
            if "data" in raw:
                raise InvalidInput(f"input {name!r} has both 'data' and binary_data_size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise InvalidInput(f"input {name!r}: binary_data_size {size} runs past the end of the body")
            inputs[name] = _binary_tensor(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif "data" in raw:
            inputs[name] = _json_tensor(name, datatype, shape, raw["data"])
        else:
            raise InvalidInput(f"input {name!r} has no 'data' (and no binary_data_size)")
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset} bytes of binary data that no input's binary_data_size claims"
        )
    request_params = _params(payload.get("parameters"), "request")
    outputs = None
    raw_outputs = payload.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput("'outputs' must be a list of {\"name\": ...} objects")
        outputs = []
        for item in raw_outputs:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidInput("each requested output needs a 'name'")
            binary_flag = _params(item.get("parameters"), f"output {item['name']!r}").get("binary_data")
            outputs.append(RequestedOutput(item["name"], None if binary_flag is None else bool(binary_flag)))
    request_id = payload.get("id")
    return InferRequest(
        id=None if request_id is None else str(request_id),
        inputs=inputs,
        outputs=outputs,
        binary_output=bool(request_params.get("binary_data_output", False)),
        parameters=request_params,
    )


def _json_data(array: Tensor) -> list[Any]:
    if array.dtype == object or array.dtype.kind in "SU":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.ravel()]
    flat: list[Any] = array.ravel().tolist()
    return flat


def _binary_data(array: Tensor) -> bytes:
    if array.dtype == object or array.dtype.kind in "SU":
        return encode_bytes_tensor(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: dict[str, Tensor],
    requested: InferRequest | None,
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it (else None)."""
    binary_default = requested.binary_output if requested is not None else False
    flags = {o.name: o.binary for o in requested.outputs} if requested is not None and requested.outputs else {}
    order = [o.name for o in requested.outputs] if requested is not None and requested.outputs else list(outputs)
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name in order:
        array = outputs[name]
        entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(array.dtype), "shape": list(array.shape)}
        flag = flags.get(name)
        if flag if flag is not None else binary_default:
            chunk = _binary_data(array)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = _json_data(array)
        entries.append(entry)
    head: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        head["id"] = request_id
    head["outputs"] = entries
    header = orjson.dumps(head)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
