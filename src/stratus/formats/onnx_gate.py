"""The gate for uploaded models: refuse formats that run code on load, then check the ONNX for real."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnxruntime as ort

from stratus.errors import InvalidInput, UnsafeFormat
from stratus.formats.sniff import ZIP_MAGIC, sniff_unsafe
from stratus.types import ORT_TO_V2, Signature, TensorSpec

_WHY = (
    "loading it would run arbitrary code (pickle deserialisation), so Stratus never loads it. Export the "
    "model to ONNX, or register the scikit-learn or torch object from Python with the SDK, which converts it"
)
_REASON_LIMIT = 300


@dataclass(frozen=True)
class OnnxInfo:
    signature: Signature
    opset: int
    ir_version: int
    producer: str


def _short_reason(exc: Exception) -> str:
    """The first line of an exception's message: checker and runtime errors run to many lines."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    return reason if len(reason) <= _REASON_LIMIT else reason[: _REASON_LIMIT - 3] + "..."


def _spec(arg: ort.NodeArg) -> TensorSpec:
    datatype = ORT_TO_V2.get(arg.type)
    if datatype is None:
        raise InvalidInput(f"tensor {arg.name!r} has type {arg.type}, which Stratus cannot serve")
    # ONNX Runtime reports a symbolic dimension as its name (str) and an unknown one as None.
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


def _parse(data: bytes) -> onnx.ModelProto:
    if not data:
        raise InvalidInput("not a valid ONNX model: the file is empty")
    if data.startswith(ZIP_MAGIC):
        raise InvalidInput("not a valid ONNX model: the file is a ZIP archive; upload the .onnx file itself")
    try:
        model = onnx.load_from_string(data)
    except Exception:
        raise InvalidInput(
            "not a valid ONNX model: the bytes do not decode as an ONNX protobuf (truncated, or another format)"
        ) from None
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:
        raise InvalidInput(f"not a valid ONNX model: {_short_reason(exc)}") from None
    return model


def inspect_onnx(data: bytes, filename: str | None = None) -> OnnxInfo:
    """Check ``data`` is a loadable ONNX model and read its signature; refuse unsafe formats first."""
    unsafe = sniff_unsafe(data, filename)
    if unsafe is not None:
        raise UnsafeFormat(f"this upload looks like {unsafe}: {_WHY}")
    model = _parse(data)
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InvalidInput(f"not a valid ONNX model: ONNX Runtime cannot load it: {_short_reason(exc)}") from None
    signature = Signature(
        inputs=tuple(_spec(a) for a in session.get_inputs()),
        outputs=tuple(_spec(a) for a in session.get_outputs()),
    )
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxInfo(signature, opset, model.ir_version, model.producer_name)
