"""The Open Inference Protocol's gRPC messages to and from numpy: ``ModelInferRequest`` in, and
``ModelInferResponse`` out.

Tensor data comes either in ``raw_input_contents`` (one little-endian, row-major byte string per input,
in input order, as tritonclient.grpc sends it; a BYTES element is a little-endian uint32 length and its
bytes) or in each input's typed ``contents``. Responses carry every output in ``raw_output_contents``,
which is what tritonclient.grpc reads and what costs least to build.

The messages are the ones generated from stratus/grpc/inference.proto; this module only reads and fills
them (duck-typed, ``Any``), so the protocol layer imports neither grpc nor the adapter package. Every
input is held to the same bounds as the HTTP codec's, and bad input raises InvalidInput (never anything
the adapter would report as an internal error).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from stratus.errors import InvalidInput
from stratus.protocol._bounds import DEFAULT_LIMITS, TensorLimits, check_shape
from stratus.protocol._v2 import timeout_ms
from stratus.protocol._v2_binary import tensor_from_bytes, tensor_to_bytes
from stratus.types import V2_TO_NUMPY, Tensor, v2_datatype

# The typed field that carries each datatype, and for the narrow integers the range the wider field's
# values must fit (protobuf has no 8- or 16-bit integers, so INT8 travels in int32 fields).
_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = tuple(sorted(set(_CONTENTS_FIELD.values())))
_ITEMSIZE = {name: dtype.itemsize for name, dtype in V2_TO_NUMPY.items() if name != "BYTES"}
_NO_PARAMETERS: dict[str, Any] = {}


@dataclass(slots=True)
class GrpcInferRequest:
    """A decoded ModelInferRequest. Numeric inputs sent raw are read-only views of the message's bytes;
    nothing downstream may write into inputs."""

    id: str
    inputs: dict[str, Tensor]
    outputs: list[str] | None  # None: every output, in the model's order
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def timeout_ms(self) -> float | None:
        """Triton's request parameter ``timeout`` (microseconds) as milliseconds, as over HTTP."""
        return timeout_ms(self.parameters)


def parameter_value(param: Any) -> Any:
    """The Python value of an InferParameter or ModelRepositoryParameter (its oneof); None if unset."""
    which = param.WhichOneof("parameter_choice")
    return None if which is None else getattr(param, which)


def parameters_of(params: Mapping[str, Any]) -> dict[str, Any]:
    if not params:
        return _NO_PARAMETERS
    return {key: parameter_value(value) for key, value in params.items()}


def _raw_tensor(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> Tensor:
    itemsize = _ITEMSIZE.get(datatype)
    if itemsize is not None and len(raw) != prod(shape) * itemsize:
        raise InvalidInput(
            f"input {name!r}: raw_input_contents has {len(raw)} bytes but shape {list(shape)} of {datatype} "
            f"needs {prod(shape) * itemsize}"
        )
    return tensor_from_bytes(name, datatype, shape, raw)


def _typed_tensor(name: str, datatype: str, shape: tuple[int, ...], contents: Any) -> Tensor:
    wanted = _CONTENTS_FIELD.get(datatype)
    if wanted is None:
        raise InvalidInput(f"input {name!r}: {datatype} has no typed contents field; send it in raw_input_contents")
    for other in _ALL_FIELDS:
        if other != wanted and len(getattr(contents, other)):
            raise InvalidInput(f"input {name!r}: {datatype} data goes in contents.{wanted}, not contents.{other}")
    values = getattr(contents, wanted)
    count = prod(shape)
    if len(values) != count:
        raise InvalidInput(f"input {name!r}: shape {list(shape)} needs {count} values but {len(values)} were given")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    if dtype.kind in "iu" and dtype.itemsize < 4 and count:
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidInput(f"input {name!r}: values are out of range for {datatype}")
        return wide.astype(dtype).reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


def decode_infer_request(request: Any, limits: TensorLimits = DEFAULT_LIMITS) -> GrpcInferRequest:
    """Decode a ModelInferRequest into numpy inputs, every shape within ``limits`` (the HTTP codec's
    bounds). Raises InvalidInput for anything malformed."""
    raw_inputs = request.inputs
    if not raw_inputs:
        raise InvalidInput("request needs 'inputs': at least one tensor")
    raw_contents = request.raw_input_contents
    if raw_contents and len(raw_contents) != len(raw_inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw_contents)} entries but the request has {len(raw_inputs)} inputs: "
            "give one per input, or send every input in its typed contents"
        )
    inputs: dict[str, Tensor] = {}
    for index, tensor in enumerate(raw_inputs):
        name = tensor.name
        if not name:
            raise InvalidInput(f"inputs[{index}] has no name")
        if name in inputs:
            raise InvalidInput(f"input {name!r} is given twice")
        datatype = tensor.datatype
        if datatype not in V2_TO_NUMPY:
            known = ", ".join(V2_TO_NUMPY)
            raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}; expected one of {known}")
        shape = check_shape(name, list(tensor.shape), datatype, limits)
        if raw_contents:
            if tensor.HasField("contents"):
                raise InvalidInput(f"input {name!r} has typed contents but the request uses raw_input_contents")
            inputs[name] = _raw_tensor(name, datatype, shape, raw_contents[index])
        else:
            inputs[name] = _typed_tensor(name, datatype, shape, tensor.contents)
    outputs: list[str] | None = None
    if request.outputs:
        outputs = []
        for index, output in enumerate(request.outputs):
            if not output.name:
                raise InvalidInput(f"outputs[{index}] has no name")
            if output.name in outputs:
                raise InvalidInput(f"output {output.name!r} is requested twice")
            outputs.append(output.name)
    return GrpcInferRequest(id=request.id, inputs=inputs, outputs=outputs, parameters=parameters_of(request.parameters))


def fill_infer_response(
    response: Any,
    *,
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: Mapping[str, Tensor],
    requested: list[str] | None,
) -> Any:
    """Fill an empty ModelInferResponse: the requested outputs (else all, in the model's order), each as
    name, datatype and shape, its data in raw_output_contents."""
    response.model_name = model_name
    response.model_version = model_version
    response.id = request_id
    raw = response.raw_output_contents
    for name in requested if requested else list(outputs):
        array = outputs.get(name)
        if array is None:
            have = ", ".join(repr(n) for n in outputs)
            raise InvalidInput(f"output {name!r} was requested but the model has no such output; it has {have}")
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        datatype = v2_datatype(array.dtype)
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        raw.append(tensor_to_bytes(array, datatype))
    return response


__all__ = [
    "GrpcInferRequest",
    "decode_infer_request",
    "fill_infer_response",
    "parameter_value",
    "parameters_of",
]
