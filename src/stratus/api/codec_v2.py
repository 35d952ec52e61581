"""Open Inference Protocol (KServe V2) bodies to and from numpy: JSON, and Triton's binary tensor
data extension. Pure functions over bytes: the HTTP handler owns headers and status codes.

Binary extension in one paragraph: when the request carries ``Inference-Header-Content-Length: N``,
the first N bytes of the body are the JSON header and the rest is raw tensor data. Each input whose
``parameters.binary_data_size`` is set takes that many bytes, in input order. Numbers are little-endian
and row-major, BOOL is one byte per element, and each BYTES element is a little-endian uint32 length
followed by that many bytes. Responses use the same layout for outputs asked for in binary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np
import orjson

from stratus.api.json_body import json_object
from stratus.errors import InvalidInput
from stratus.types import V2_TO_NUMPY, decode_bytes_tensor, encode_bytes_tensor, v2_datatype

Tensor = np.ndarray[Any, Any]

HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

_EMPTY = memoryview(b"")
# orjson writes numeric numpy arrays in C, and float32/float16 in their own shortest form (0.9, not
# 0.8999999761581421), which parses back to the identical value.
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: not said for this output, the request-level binary_data_output decides


@dataclass(slots=True)
class InferRequest:
    """A decoded request. Inputs are C-contiguous numpy arrays of the declared shape and datatype
    (BYTES: object arrays of ``bytes``). Numeric inputs that arrived as binary data are read-only: views of
    the request body when it is aligned for their dtype (no copy), else aligned copies. Nothing downstream
    may write into inputs; JSON and BYTES inputs are owned, writable arrays."""

    id: str | None
    inputs: dict[str, Tensor]
    outputs: list[RequestedOutput] | None  # None or empty: every output, in the model's order
    binary_output: bool
    parameters: dict[str, Any] = field(default_factory=dict)


# --- request decoding -----------------------------------------------------------------------------


def _count_error(name: str, shape: tuple[int, ...], count: int, given: int) -> InvalidInput:
    return InvalidInput(f"input {name!r}: shape {list(shape)} needs {count} values but {given} were given")


def _flatten(data: list[Any]) -> list[Any]:
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _json_bytes(name: str, shape: tuple[int, ...], count: int, data: list[Any]) -> Tensor:
    flat = _flatten(data)
    if len(flat) != count:
        raise _count_error(name, shape, count, len(flat))
    encoded: list[bytes] = []
    for value in flat:
        if not isinstance(value, str):
            raise InvalidInput(f"input {name!r}: BYTES data must be strings, got {_json_type(value)}")
        encoded.append(value.encode("utf-8"))
    array = np.empty(count, dtype=object)
    array[:] = encoded
    return array.reshape(shape)


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _first_offender(data: list[Any], accept: tuple[type, ...]) -> str:
    """Only on the error path: name the first element that made the data unusable."""
    for value in _flatten(data):
        if not isinstance(value, accept) or (bool not in accept and isinstance(value, bool)):
            return f"{_json_type(value)} ({value!r})"
    return "mixed values"


def _json_numbers(name: str, datatype: str, shape: tuple[int, ...], count: int, data: list[Any]) -> Tensor:
    # One C pass over the (possibly nested) lists; numpy infers the element kind, which is then
    # checked as a whole instead of element by element.
    try:
        raw = np.array(data)
    except ValueError:
        raise InvalidInput(f"input {name!r}: nested data is ragged (rows of different lengths)") from None
    if raw.size != count:
        raise _count_error(name, shape, count, raw.size)
    dtype = V2_TO_NUMPY[datatype]
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    kind = raw.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            offender = _first_offender(data, (bool,))
            raise InvalidInput(f"input {name!r}: BOOL data must be true or false, got {offender}")
        return raw.reshape(shape)
    if kind not in "iuf":
        offender = _first_offender(data, (int, float))
        raise InvalidInput(f"input {name!r}: {datatype} data must be numbers, got {offender}")
    if raw.dtype == dtype:
        return raw.reshape(shape)  # np.array already made a fresh, owned, C-contiguous array
    try:
        with np.errstate(over="raise", invalid="raise"):
            if dtype.kind in "iu" and kind == "f":
                if not np.array_equal(raw, np.trunc(raw)):
                    raise InvalidInput(f"input {name!r}: {datatype} data must be whole numbers, got a fraction")
                # Float inference rounded any integers beyond 2**53 (UINT64 data above 2**63 always
                # lands here): convert the original values, which numpy range-checks one by one.
                array = np.array(data, dtype=dtype)
            else:
                array = raw.astype(dtype)
                # Integer casts wrap around silently (300 -> 44 in INT8, -1 -> 2**64-1 in UINT64).
                if dtype.kind in "iu" and not np.array_equal(array, raw):
                    raise OverflowError
    except (OverflowError, FloatingPointError):
        raise InvalidInput(f"input {name!r}: values are out of range for {datatype}") from None
    return array.reshape(shape)


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
    if datatype == "BOOL" and expected and np.frombuffer(chunk, dtype=np.uint8).max() > 1:
        raise InvalidInput(f"input {name!r}: binary BOOL data must be bytes 0 or 1")
    array = np.frombuffer(chunk, dtype=dtype).reshape(shape)
    if not array.flags.aligned:
        # The tensor's offset in the body is arbitrary (it follows the JSON header and other tensors)
        # and runtimes may assume aligned memory: copy, but keep it read-only like the zero-copy case
        # so that code writing into inputs fails every time rather than only for some requests.
        array = array.copy()
        array.flags.writeable = False
    return array


def _shape(name: str, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers, got {raw!r}")
    return tuple(raw)


def _params(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    return raw


def _flag(params: dict[str, Any], key: str, where: str) -> bool | None:
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"{where}: parameter {key!r} must be true or false, got {value!r}")
    return value


def _decode_input(index: int, raw: Any, seen: dict[str, Tensor]) -> tuple[str, str, tuple[int, ...], dict[str, Any]]:
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{index}] must be an object with name, shape, datatype and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{index}] has no 'name' (a non-empty string)")
    if name in seen:
        raise InvalidInput(f"input {name!r} is given twice")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
        known = ", ".join(V2_TO_NUMPY)
        raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}; expected one of {known}")
    return name, datatype, _shape(name, raw.get("shape")), _params(raw.get("parameters"), f"input {name!r}")


def _requested_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInput("'outputs' must be a list of {\"name\": ...} objects")
    requested: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"outputs[{index}] needs a 'name' (a non-empty string)")
        if name in seen:
            raise InvalidInput(f"output {name!r} is requested twice")
        seen.add(name)
        where = f"output {name!r}"
        requested.append(RequestedOutput(name, _flag(_params(item.get("parameters"), where), "binary_data", where)))
    return requested


def decode_infer_request(body: bytes, header_length: int | None) -> InferRequest:
    """Decode an infer request body; ``header_length`` is the Inference-Header-Content-Length header."""
    if header_length is None:
        header, binary = memoryview(body), _EMPTY
    else:
        if not 0 <= header_length <= len(body):
            raise InvalidInput(f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes")
        whole = memoryview(body)
        header, binary = whole[:header_length], whole[header_length:]
    payload = json_object(header, "a JSON object with an 'inputs' list")
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request needs 'inputs': a non-empty list of tensors")
    inputs: dict[str, Tensor] = {}
    offset = 0
    for index, raw in enumerate(raw_inputs):
        name, datatype, shape, params = _decode_input(index, raw, inputs)
        size = params.get("binary_data_size")
        if size is not None:
            if "data" in raw:
                raise InvalidInput(f"input {name!r} has both 'data' and binary_data_size; give one")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer, got {size!r}")
            if header_length is None:
                raise InvalidInput(
                    f"input {name!r} has binary_data_size but the request has no {HEADER_LENGTH_HEADER} header"
                )
            if offset + size > len(binary):
                raise InvalidInput(
                    f"input {name!r}: binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} binary bytes remain)"
                )
            inputs[name] = _binary_tensor(name, datatype, shape, binary[offset : offset + size])
            offset += size
            continue
        data = raw.get("data")
        if data is None:
            raise InvalidInput(f"input {name!r} has no 'data' (and no binary_data_size)")
        if not isinstance(data, list):
            raise InvalidInput(f"input {name!r}: 'data' must be a list, got {_json_type(data)}")
        count = prod(shape)
        if datatype == "BYTES":
            inputs[name] = _json_bytes(name, shape, count, data)
        else:
            inputs[name] = _json_numbers(name, datatype, shape, count, data)
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset} bytes of binary data that no input's binary_data_size claims"
        )
    request_params = _params(payload.get("parameters"), "request")
    request_id = payload.get("id")
    return InferRequest(
        id=None if request_id is None else str(request_id),
        inputs=inputs,
        outputs=_requested_outputs(payload.get("outputs")),
        binary_output=bool(_flag(request_params, "binary_data_output", "request")),
        parameters=request_params,
    )


# --- response encoding ----------------------------------------------------------------------------


def _json_data(array: Tensor, datatype: str) -> list[Any] | Tensor:
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.ravel()]
    # orjson serializes only native-endian (ensured by the caller), C-contiguous arrays: ravel() is.
    return array.ravel()


def _binary_data(array: Tensor, datatype: str) -> bytes:
    if datatype == "BYTES":
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
    """The response body, and the JSON header's length when binary outputs follow it (None: pure JSON,
    send as application/json; otherwise application/octet-stream with Inference-Header-Content-Length).

    An output is binary if its own ``binary_data`` parameter says so, else if the request asked for
    ``binary_data_output``. Outputs come in the requested order, else in the order of ``outputs``."""
    binary_default = requested.binary_output if requested is not None else False
    if requested is not None and requested.outputs:
        selection = [(o.name, binary_default if o.binary is None else o.binary) for o in requested.outputs]
    else:
        selection = [(name, binary_default) for name in outputs]
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in selection:
        array = outputs.get(name)
        if array is None:
            have = ", ".join(repr(n) for n in outputs)
            raise InvalidInput(f"output {name!r} was requested but the model has no such output; it has {have}")
        if not array.dtype.isnative:  # neither orjson nor the datatype table take byte-swapped dtypes
            array = array.astype(array.dtype.newbyteorder("="))
        datatype = v2_datatype(array.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            chunk = _binary_data(array, datatype)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = _json_data(array, datatype)
        entries.append(entry)
    head: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        head["id"] = request_id
    head["outputs"] = entries
    header = orjson.dumps(head, option=_DUMPS_OPTIONS)
    if not chunks:
        return header, None
    return b"".join((header, *chunks)), len(header)
