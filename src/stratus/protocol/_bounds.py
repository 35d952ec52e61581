"""The bounds every tensor that reaches the server is held to, checked on its declared shape before
anything is allocated for it, whatever protocol brought it (V2 JSON and binary, V1, gRPC).

Without them a shape at the edge of its type reached numpy: ``[0, 2**63-1, 2**63-1]`` with empty data
("array is too big"), or more than 64 dimensions, each answered 500. A dimension of 0 counts as 1 in the
element count, as it does in numpy's own size check: an empty tensor may not hide an impossible shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stratus.errors import InvalidInput

#: numpy's most dimensions (NPY_MAXDIMS).
MAX_RANK = 64
INT64_MAX = 2**63 - 1
#: The most decimal digits a number in a header or path segment may have before it is parsed: int64's.
MAX_DIGITS = 19
# What one element takes in memory, for the bytes bound: BYTES elements are object pointers.
_OBJECT_ITEMSIZE = 8
_ITEMSIZE = {
    "BOOL": 1,
    "UINT8": 1,
    "INT8": 1,
    "UINT16": 2,
    "INT16": 2,
    "FP16": 2,
    "UINT32": 4,
    "INT32": 4,
    "FP32": 4,
    "UINT64": 8,
    "INT64": 8,
    "FP64": 8,
    "BYTES": _OBJECT_ITEMSIZE,
}


@dataclass(frozen=True, slots=True)
class TensorLimits:
    """How large one decoded tensor may be: elements (dimensions of 0 counted as 1) and bytes in memory."""

    max_elements: int
    max_bytes: int
    max_rank: int = MAX_RANK

    @classmethod
    def for_request_bytes(cls, max_request_bytes: int) -> TensorLimits:
        """The limits that follow from the request body limit: every element takes at least one byte on
        the wire, and decodes to at most 8 bytes (FP64, INT64, or a BYTES element's pointer)."""
        return cls(max_elements=max_request_bytes, max_bytes=8 * max_request_bytes)


#: The limits of the default request body limit (64 MiB, Settings.max_request_bytes).
DEFAULT_LIMITS = TensorLimits.for_request_bytes(64 * 1024 * 1024)
#: Only what numpy itself can hold: for tensors this side produced or already checked (responses).
NUMPY_LIMITS = TensorLimits(max_elements=INT64_MAX, max_bytes=INT64_MAX)


def check_shape(name: str, raw: Any, datatype: str, limits: TensorLimits, what: str = "input") -> tuple[int, ...]:
    """``raw`` (a JSON list, or a tuple) as a shape within ``limits``; InvalidInput naming the tensor (the
    ``what`` called ``name``) if not."""
    # The common case in one tight pass; anything unusual falls through to the checks that explain it.
    if type(raw) is list and len(raw) <= limits.max_rank:
        span = 1
        for dim in raw:
            if type(dim) is not int or not 0 <= dim <= INT64_MAX:
                break
            span *= dim or 1
            if span > limits.max_elements:
                break
        else:
            if span * _ITEMSIZE.get(datatype, _OBJECT_ITEMSIZE) <= limits.max_bytes:
                return tuple(raw)
    if not isinstance(raw, list | tuple):
        raise InvalidInput(f"{what} {name!r}: shape must be a list of non-negative integers, got {raw!r}")
    if len(raw) > limits.max_rank:
        raise InvalidInput(f"{what} {name!r}: shape has {len(raw)} dimensions; at most {limits.max_rank} are allowed")
    span = 1
    for dim in raw:
        if not isinstance(dim, int) or isinstance(dim, bool) or not 0 <= dim <= INT64_MAX:
            raise InvalidInput(
                f"{what} {name!r}: shape must be a list of non-negative integers (at most 2**63-1), got {_short(raw)}"
            )
        # Python integers do not overflow, but stop at once: 64 dimensions of 2**63 is a 4,000-bit number.
        span *= dim or 1
        if span > limits.max_elements:
            raise InvalidInput(
                f"{what} {name!r}: shape {_short(raw)} is too large: at most {limits.max_elements} elements "
                "(a dimension of 0 counts as 1)"
            )
    if span * _ITEMSIZE.get(datatype, _OBJECT_ITEMSIZE) > limits.max_bytes:
        raise InvalidInput(f"{what} {name!r}: shape {_short(raw)} of {datatype} is more than {limits.max_bytes} bytes")
    return tuple(raw)


def _short(raw: Any) -> str:
    text = repr(list(raw)) if isinstance(raw, list | tuple) else repr(raw)
    return text if len(text) <= 200 else text[:200] + "...]"


def parse_count(raw: str, what: str) -> int:
    """A non-negative decimal integer from a header or a path segment: ASCII digits only, at most 19 of
    them (int() alone takes "+1", " 1", "1_0" and other scripts' digits, and fails past 4,300 digits)."""
    if not raw.isascii() or not raw.isdigit():
        raise InvalidInput(f"{what} must be a non-negative integer, got {_clip(raw)}")
    if len(raw) > MAX_DIGITS or int(raw) > INT64_MAX:
        raise InvalidInput(f"{what} is out of range: at most 2**63-1, got {_clip(raw)}")
    return int(raw)


def _clip(raw: str) -> str:
    return repr(raw) if len(raw) <= 40 else repr(raw[:40]) + f"... ({len(raw)} characters)"
