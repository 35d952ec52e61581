"""V2 tensors as JSON ``data`` lists, both ways: strict reading (ragged lists, wrong element kinds and
values out of the datatype's range are refused, never wrapped or rounded) and writing."""

from __future__ import annotations

from typing import Any

import numpy as np

from stratus.errors import InvalidInput
from stratus.types import V2_TO_NUMPY, Tensor


def count_error(name: str, shape: tuple[int, ...], count: int, given: int) -> InvalidInput:
    return InvalidInput(f"input {name!r}: shape {list(shape)} needs {count} values but {given} were given")


def _flatten(data: list[Any]) -> list[Any]:
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _first_offender(data: list[Any], accept: tuple[type, ...]) -> str:
    """Only on the error path: name the first element that made the data unusable."""
    for value in _flatten(data):
        if not isinstance(value, accept) or (bool not in accept and isinstance(value, bool)):
            return f"{json_type(value)} ({value!r})"
    return "mixed values"


def json_bytes(name: str, shape: tuple[int, ...], count: int, data: list[Any]) -> Tensor:
    flat = _flatten(data)
    if len(flat) != count:
        raise count_error(name, shape, count, len(flat))
    encoded: list[bytes] = []
    for value in flat:
        if not isinstance(value, str):
            raise InvalidInput(f"input {name!r}: BYTES data must be strings, got {json_type(value)}")
        encoded.append(value.encode("utf-8"))
    array = np.empty(count, dtype=object)
    array[:] = encoded
    return array.reshape(shape)


def json_numbers(name: str, datatype: str, shape: tuple[int, ...], count: int, data: list[Any]) -> Tensor:
    # One C pass over the (possibly nested) lists; numpy infers the element kind, which is then
    # checked as a whole instead of element by element.
    try:
        raw = np.array(data)
    except ValueError:
        raise InvalidInput(f"input {name!r}: nested data is ragged (rows of different lengths)") from None
    if raw.size != count:
        raise count_error(name, shape, count, raw.size)
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


def json_data(array: Tensor, datatype: str) -> list[Any] | Tensor:
    """What goes into a tensor's ``data``: the array itself for orjson to write (numbers), or strings."""
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.ravel()]
    # orjson serializes only native-endian (ensured by the caller), C-contiguous arrays: ravel() is.
    return array.ravel()
