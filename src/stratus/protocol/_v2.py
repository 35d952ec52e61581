"""Open Inference Protocol (KServe V2) infer requests and responses to and from numpy, in JSON and in
Triton's binary tensor data extension, both directions: the server decodes requests and encodes responses,
a client (the router's wire to replicas, the SDK) encodes requests and decodes responses. Pure functions
over bytes: the transport owns headers and statuses.

Binary extension in one paragraph: when a body comes with ``Inference-Header-Content-Length: N``, its first
N bytes are the JSON header and the rest is raw tensor data. Each tensor whose ``parameters.binary_data_size``
is set takes that many bytes, in order (see _v2_binary for the layout). A request asks for binary outputs
with ``binary_data_output`` (request parameter) or ``binary_data`` (per output).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from math import prod
from typing import Any

import orjson

from stratus.errors import InvalidInput
from stratus.protocol._bounds import DEFAULT_LIMITS, INT64_MAX, NUMPY_LIMITS, TensorLimits, check_shape, parse_count
from stratus.protocol._json import json_object
from stratus.protocol._v2_binary import tensor_from_bytes, tensor_to_bytes
from stratus.protocol._v2_json import json_bytes, json_data, json_numbers, json_type
from stratus.types import V2_TO_NUMPY, Tensor, v2_datatype

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

    @property
    def timeout_ms(self) -> float | None:
        return timeout_ms(self.parameters)


@dataclass(slots=True)
class InferResponse:
    """A decoded response, as a client sees it."""

    model_name: str
    model_version: str
    id: str | None
    outputs: dict[str, Tensor]
    parameters: dict[str, Any] = field(default_factory=dict)


def timeout_ms(parameters: Mapping[str, Any]) -> float | None:
    """Triton's request parameter ``timeout``, in microseconds (how long the request may wait to run), as
    milliseconds; None when it is not given."""
    raw = parameters.get("timeout")
    if raw is None:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 < raw <= INT64_MAX:
        raise InvalidInput("parameter 'timeout' must be a positive integer number of microseconds")
    return raw / 1000.0


def parse_header_length(raw: str | None) -> int | None:
    """The Inference-Header-Content-Length header's value (None when it is absent)."""
    return None if raw is None else parse_count(raw, HEADER_LENGTH_HEADER)


# --- the parts both sides share --------------------------------------------------------------------


def _split(body: bytes | memoryview, header_length: int | None) -> tuple[memoryview, memoryview]:
    whole = memoryview(body)
    if header_length is None:
        return whole, _EMPTY
    if not 0 <= header_length <= len(whole):
        raise InvalidInput(f"{HEADER_LENGTH_HEADER} is {header_length} but the body has {len(whole)} bytes")
    return whole[:header_length], whole[header_length:]


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


def _decode_tensors(
    raw_tensors: list[Any], binary: memoryview, has_binary: bool, limits: TensorLimits, what: str
) -> dict[str, Tensor]:
    """Each ``{name, shape, datatype, data | parameters.binary_data_size}`` entry as an array, its shape
    checked against ``limits`` before anything is allocated; binary data taken from ``binary`` in order."""
    tensors: dict[str, Tensor] = {}
    offset = 0
    for index, raw in enumerate(raw_tensors):
        if not isinstance(raw, dict):
            raise InvalidInput(f"{what}s[{index}] must be an object with name, shape, datatype and data")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{what}s[{index}] has no 'name' (a non-empty string)")
        if name in tensors:
            raise InvalidInput(f"{what} {name!r} is given twice")
        datatype = raw.get("datatype")
        if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
            known = ", ".join(V2_TO_NUMPY)
            raise InvalidInput(f"{what} {name!r}: unknown datatype {datatype!r}; expected one of {known}")
        shape = check_shape(name, raw.get("shape"), datatype, limits, what)
        raw_params = raw.get("parameters")  # (the message is built only when there are parameters)
        size = None if raw_params is None else _params(raw_params, f"{what} {name!r}").get("binary_data_size")
        if size is not None:
            if "data" in raw:
                raise InvalidInput(f"{what} {name!r} has both 'data' and binary_data_size; give one")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(f"{what} {name!r}: binary_data_size must be a non-negative integer, got {size!r}")
            if not has_binary:
                raise InvalidInput(
                    f"{what} {name!r} has binary_data_size but the {'request' if what == 'input' else 'response'} "
                    f"has no {HEADER_LENGTH_HEADER} header"
                )
            if offset + size > len(binary):
                raise InvalidInput(
                    f"{what} {name!r}: binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} binary bytes remain)"
                )
            tensors[name] = tensor_from_bytes(name, datatype, shape, binary[offset : offset + size])
            offset += size
            continue
        data = raw.get("data")
        if data is None:
            raise InvalidInput(f"{what} {name!r} has no 'data' (and no binary_data_size)")
        if not isinstance(data, list):
            raise InvalidInput(f"{what} {name!r}: 'data' must be a list, got {json_type(data)}")
        count = prod(shape)
        if datatype == "BYTES":
            tensors[name] = json_bytes(name, shape, count, data)
        else:
            tensors[name] = json_numbers(name, datatype, shape, count, data)
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset} bytes of binary data that no {what}'s binary_data_size claims"
        )
    return tensors


def _entry(name: str, array: Tensor, binary: bool, chunks: list[bytes]) -> dict[str, Any]:
    """One tensor's JSON entry; its raw bytes go to ``chunks`` when ``binary``."""
    if not array.dtype.isnative:  # neither orjson nor the datatype table take byte-swapped dtypes
        array = array.astype(array.dtype.newbyteorder("="))
    datatype = v2_datatype(array.dtype)
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if binary:
        chunk = tensor_to_bytes(array, datatype)
        entry["parameters"] = {"binary_data_size": len(chunk)}
        chunks.append(chunk)
    else:
        entry["data"] = json_data(array, datatype)
    return entry


def _finish(head: dict[str, Any], chunks: list[bytes]) -> tuple[bytes, int | None]:
    """The body: the JSON header, then any binary data; and the header's length (None: plain JSON)."""
    header = orjson.dumps(head, option=_DUMPS_OPTIONS)
    if not chunks:
        return header, None
    return b"".join((header, *chunks)), len(header)


# --- server side: requests in, responses out --------------------------------------------------------


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


def decode_infer_request(
    body: bytes | memoryview, header_length: int | None, limits: TensorLimits = DEFAULT_LIMITS
) -> InferRequest:
    """Decode an infer request body; ``header_length`` is the Inference-Header-Content-Length header."""
    header, binary = _split(body, header_length)
    payload = json_object(header, "a JSON object with an 'inputs' list")
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request needs 'inputs': a non-empty list of tensors")
    inputs = _decode_tensors(raw_inputs, binary, header_length is not None, limits, "input")
    request_params = _params(payload.get("parameters"), "request")
    request_id = payload.get("id")
    return InferRequest(
        id=None if request_id is None else str(request_id),
        inputs=inputs,
        outputs=_requested_outputs(payload.get("outputs")),
        binary_output=bool(_flag(request_params, "binary_data_output", "request")),
        parameters=request_params,
    )


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
    chunks: list[bytes] = []
    entries: list[dict[str, Any]] = []
    if requested is not None and requested.outputs:
        for wanted in requested.outputs:
            array = outputs.get(wanted.name)
            if array is None:
                have = ", ".join(repr(n) for n in outputs)
                raise InvalidInput(
                    f"output {wanted.name!r} was requested but the model has no such output; it has {have}"
                )
            binary = binary_default if wanted.binary is None else wanted.binary
            entries.append(_entry(wanted.name, array, binary, chunks))
    else:
        entries = [_entry(name, array, binary_default, chunks) for name, array in outputs.items()]
    head: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        head["id"] = request_id
    head["outputs"] = entries
    return _finish(head, chunks)


# --- client side: requests out, responses in --------------------------------------------------------


def encode_infer_request(
    inputs: dict[str, Tensor],
    *,
    outputs: list[str] | None = None,
    binary_inputs: bool = True,
    binary_outputs: bool = True,
    timeout_ms: float | None = None,
    request_id: str | None = None,
) -> tuple[bytes, int | None]:
    """A request body and its JSON header's length (None when no input is binary: plain JSON). Binary
    inputs skip JSON number formatting and parsing, so they are the faster encoding for numeric tensors;
    ``binary_outputs`` asks the server for the same. A deadline travels as Triton's ``timeout`` parameter,
    in microseconds."""
    parameters: dict[str, Any] = {}
    if binary_outputs:
        parameters["binary_data_output"] = True
    if timeout_ms is not None:
        parameters["timeout"] = max(1, int(timeout_ms * 1000))
    head: dict[str, Any] = {}
    if request_id is not None:
        head["id"] = request_id
    if parameters:
        head["parameters"] = parameters
    if outputs:
        head["outputs"] = [{"name": name, "parameters": {"binary_data": binary_outputs}} for name in outputs]
    chunks: list[bytes] = []
    head["inputs"] = [_entry(name, array, binary_inputs, chunks) for name, array in inputs.items()]
    return _finish(head, chunks)


def decode_infer_response(
    body: bytes | memoryview, header_length: int | None, limits: TensorLimits = NUMPY_LIMITS
) -> InferResponse:
    """Decode a response body (JSON or binary outputs) with the same checks a request gets."""
    header, binary = _split(body, header_length)
    payload = json_object(header, "a JSON object with an 'outputs' list")
    raw_outputs = payload.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise InvalidInput("the response's 'outputs' must be a list of tensors")
    outputs = _decode_tensors(raw_outputs, binary, header_length is not None, limits, "output")
    response_id = payload.get("id")
    return InferResponse(
        model_name=str(payload.get("model_name", "")),
        model_version=str(payload.get("model_version", "")),
        id=None if response_id is None else str(response_id),
        outputs=outputs,
        parameters=_params(payload.get("parameters"), "response"),
    )
