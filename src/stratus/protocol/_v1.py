"""The V1 prediction format (TF Serving / KServe V1): ``instances`` rows or ``inputs`` columns in,
``predictions`` out. JSON carries no datatypes, so values take the datatype of the model's signature."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from stratus.errors import InvalidInput
from stratus.protocol._bounds import DEFAULT_LIMITS, TensorLimits, check_shape
from stratus.protocol._json import json_object
from stratus.types import Signature, Tensor, TensorSpec, numpy_dtype


def _to_tensor(spec: TensorSpec, value: Any, where: str, limits: TensorLimits) -> Tensor:
    dtype = numpy_dtype(spec.datatype)
    try:
        if spec.datatype == "BYTES":
            array = np.array(value, dtype=object)
            if array.size and not all(isinstance(v, str) for v in array.flat):
                raise ValueError("expected strings")
        else:
            array = np.asarray(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            f"{where}: cannot read the values of input {spec.name!r} as {spec.datatype} "
            f"with shape {list(spec.shape)}: {exc}"
        ) from None
    # The JSON body bounded what numpy allocated; the shape is held to the same limits as V2's.
    check_shape(spec.name, array.shape, spec.datatype, limits)
    return array


def decode_predict_request(
    body: bytes | memoryview, signature: Signature, limits: TensorLimits = DEFAULT_LIMITS
) -> dict[str, Tensor]:
    expected = 'a JSON object with exactly one of "instances" or "inputs"'
    payload = json_object(body, expected)
    if ("instances" in payload) == ("inputs" in payload):
        raise InvalidInput(f"the request must be {expected}")
    specs = signature.inputs
    if "instances" in payload:
        rows = payload["instances"]
        if not isinstance(rows, list) or not rows:
            raise InvalidInput('"instances" must be a non-empty list, one item per row')
        if len(specs) == 1 and not all(isinstance(r, dict) for r in rows):
            return {specs[0].name: _to_tensor(specs[0], rows, "instances", limits)}
        if not all(isinstance(r, dict) for r in rows):
            raise InvalidInput(
                "this model has several inputs ("
                + ", ".join(repr(s.name) for s in specs)
                + "), so each instance must be an object mapping input names to values"
            )
        tensors: dict[str, Tensor] = {}
        for spec in specs:
            try:
                column = [row[spec.name] for row in rows]
            except KeyError:
                raise InvalidInput(f"an instance lacks input {spec.name!r}") from None
            tensors[spec.name] = _to_tensor(spec, column, "instances", limits)
        return tensors
    columns = payload["inputs"]
    if isinstance(columns, dict):
        by_name = {s.name: s for s in specs}
        unknown = [k for k in columns if k not in by_name]
        if unknown:
            raise InvalidInput(
                "unknown input(s) "
                + ", ".join(map(repr, unknown))
                + "; the model's inputs are "
                + ", ".join(repr(s.name) for s in specs)
            )
        return {name: _to_tensor(by_name[name], value, "inputs", limits) for name, value in columns.items()}
    if len(specs) != 1:
        raise InvalidInput('this model has several inputs, so "inputs" must be an object keyed by input name')
    return {specs[0].name: _to_tensor(specs[0], columns, "inputs", limits)}


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _plain(array: Tensor) -> Any:
    """Nested Python lists of the array's values; string tensors as str."""
    if array.dtype == object:
        return np.vectorize(_text, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def encode_predictions(outputs: dict[str, Tensor]) -> bytes:
    """One output: a list with one item per row. Several: one object per row keyed by output name."""
    if len(outputs) == 1:
        predictions: Any = _plain(next(iter(outputs.values())))
    else:
        plain = {name: _plain(array) for name, array in outputs.items()}
        rows = {len(v) if isinstance(v, list) else -1 for v in plain.values()}
        if len(rows) == 1 and -1 not in rows:
            count = rows.pop()
            predictions = [{name: plain[name][i] for name in plain} for i in range(count)]
        else:
            predictions = [plain]
    return orjson.dumps({"predictions": predictions})
