"""Tensor datatypes and model signatures, independent of any protocol transport."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stratus.errors import InvalidInput

# Open Inference Protocol datatype names and the numpy dtypes that carry them. BYTES tensors hold
# Python bytes/str objects (numpy object arrays), which is how ONNX Runtime takes string tensors.
V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

_NUMPY_TO_V2: dict[np.dtype[Any], str] = {dt: name for name, dt in V2_TO_NUMPY.items()}

# ONNX Runtime reports tensor types as strings like "tensor(float)".
ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    try:
        return V2_TO_NUMPY[datatype]
    except KeyError:
        known = ", ".join(V2_TO_NUMPY)
        raise InvalidInput(f"unknown datatype {datatype!r}; expected one of {known}") from None


def v2_datatype(dtype: np.dtype[Any]) -> str:
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return _NUMPY_TO_V2[np.dtype(dtype)]
    except KeyError:
        raise InvalidInput(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a model signature. A dynamic dimension is -1."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(name=str(data["name"]), datatype=str(data["datatype"]), shape=tuple(data["shape"]))

    def check(self, array: np.ndarray[Any, Any]) -> None:
        """Refuse an input whose rank or fixed dimensions disagree with this spec."""
        if len(array.shape) != len(self.shape):
            raise InvalidInput(
                f"input {self.name!r} has shape {list(array.shape)} but the model expects rank "
                f"{len(self.shape)} with shape {list(self.shape)} (-1 is any size)"
            )
        for got, want in zip(array.shape, self.shape, strict=True):
            if want >= 0 and got != want:
                raise InvalidInput(
                    f"input {self.name!r} has shape {list(array.shape)} but the model expects "
                    f"{list(self.shape)} (-1 is any size)"
                )


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(
            inputs=tuple(TensorSpec.from_dict(t) for t in data.get("inputs", [])),
            outputs=tuple(TensorSpec.from_dict(t) for t in data.get("outputs", [])),
        )

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        names = ", ".join(repr(s.name) for s in self.inputs)
        raise InvalidInput(f"the model has no input {name!r}; its inputs are {names}")

    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]


Tensor = np.ndarray[Any, Any]
#: The same type where the values are data rather than a request's tensors (datasets, weights, features).
Array = Tensor
_LENGTH = struct.Struct("<I")


def encode_bytes_tensor(values: Tensor) -> bytes:
    """Each element as a 4-byte little-endian length and its bytes; str elements are written as UTF-8."""
    parts: list[bytes] = []
    for value in values.ravel():
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def decode_bytes_tensor(buf: bytes | memoryview, count: int, name: str = "") -> Tensor:
    """``count`` length-prefixed elements, filling ``buf`` exactly, as a 1-D object array of ``bytes``."""
    view = memoryview(buf)
    end = len(view)
    values: list[bytes] = []
    offset = 0
    # Bounded by the buffer, not by count: a huge declared shape fails as soon as the data runs out.
    for _ in range(count):
        if offset + 4 > end:
            raise InvalidInput(
                f"input {name!r}: binary BYTES data ends after {len(values)} of {count} elements "
                "(each element is a 4-byte length followed by its bytes)"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(
                f"input {name!r}: binary BYTES element {len(values)} says it has {length} bytes "
                f"but only {end - offset} remain"
            )
        values.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != end:
        raise InvalidInput(f"input {name!r}: {end - offset} bytes left over after {count} BYTES elements")
    array = np.empty(count, dtype=object)
    array[:] = values
    return array
