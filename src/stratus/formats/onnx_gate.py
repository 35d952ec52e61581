"""The gate for uploaded models: refuse formats that run code on load, then check the ONNX for real."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnxruntime as ort

from stratus.errors import InvalidInput, UnsafeFormat
from stratus.types import ORT_TO_V2, Signature, TensorSpec

_UNSAFE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt", ".sav")
_WHY = (
    "loading it would run arbitrary code (pickle deserialisation), so Stratus never loads it. Export the "
    "model to ONNX, or register the scikit-learn or torch object from Python with the SDK, which converts it"
)


@dataclass(frozen=True)
class OnnxInfo:
    signature: Signature
    opset: int
    ir_version: int
    producer: str


def _sniff_unsafe(data: bytes, filename: str | None) -> str | None:
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return "a Python pickle"
    if data[:2] in (b"\x1f\x8b",) or data[:3] == b"\xfd7z" or data[:4] == b"\x04\x22\x4d\x18":
        return "a compressed file (joblib stores pickles this way)"
    if data[:2] == b"x\x9c" or data[:2] == b"x\x01" or data[:2] == b"x\xda":
        return "a zlib-compressed file (joblib stores pickles this way)"
    if data[:4] == b"PK\x03\x04":
        return "a ZIP archive (PyTorch checkpoints are pickles inside a ZIP)"
    if filename and filename.lower().endswith(_UNSAFE_SUFFIXES):
        return f"a {filename.rsplit('.', 1)[-1]} file"
    return None


def _spec(arg: ort.NodeArg) -> TensorSpec:
    datatype = ORT_TO_V2.get(arg.type)
    if datatype is None:
        raise InvalidInput(f"tensor {arg.name!r} has type {arg.type}, which Stratus cannot serve")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


def inspect_onnx(data: bytes, filename: str | None = None) -> OnnxInfo:
    """Check ``data`` is a loadable ONNX model and read its signature; refuse unsafe formats first."""
    unsafe = _sniff_unsafe(data, filename)
    if unsafe is not None:
        raise UnsafeFormat(f"this upload looks like {unsafe}: {_WHY}")
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InvalidInput(f"not a valid ONNX model: {str(exc).splitlines()[0][:300]}") from None
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InvalidInput(f"not a valid ONNX model: ONNX Runtime cannot load it: {str(exc)[:300]}") from None
    signature = Signature(
        inputs=tuple(_spec(a) for a in session.get_inputs()),
        outputs=tuple(_spec(a) for a in session.get_outputs()),
    )
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxInfo(signature, opset, model.ir_version, model.producer_name)
