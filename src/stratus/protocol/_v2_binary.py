"""V2 tensors as raw bytes, both ways: Triton's binary tensor data extension (HTTP) and the gRPC
``raw_input_contents``/``raw_output_contents`` use the same layout. Numbers are little-endian and row-major,
BOOL is one byte per element, and each BYTES element is a little-endian uint32 length and its bytes."""

from __future__ import annotations

from math import prod

import numpy as np

from stratus.errors import InvalidInput
from stratus.types import V2_TO_NUMPY, Tensor, decode_bytes_tensor, encode_bytes_tensor


def tensor_to_bytes(array: Tensor, datatype: str) -> bytes:
    """The raw bytes of ``array`` sent as ``datatype``."""
    if datatype == "BYTES":
        return encode_bytes_tensor(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def tensor_from_bytes(name: str, datatype: str, shape: tuple[int, ...], chunk: bytes | memoryview) -> Tensor:
    """The tensor in ``chunk``, which must hold exactly ``shape`` of ``datatype`` (``shape`` already
    bounded, see check_shape). Numeric tensors are read-only: views of ``chunk`` when it is aligned for
    their dtype (no copy), else aligned copies, so code that writes into them fails every time."""
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
        # and runtimes may assume aligned memory: copy, but keep it read-only like the zero-copy case.
        array = array.copy()
        array.flags.writeable = False
    if not array.dtype.isnative:  # big-endian hosts only: compute on native numbers
        array = array.astype(array.dtype.newbyteorder("="))
        array.flags.writeable = False
    return array
