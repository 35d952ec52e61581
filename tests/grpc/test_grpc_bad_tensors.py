"""Bad tensors over gRPC get INVALID_ARGUMENT with a message that says what is wrong, never INTERNAL; typed
contents of every kind decode to the same tensors as raw contents."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import admin_key_of, as_admin, make_settings, scaled
from grpc_helpers import serve_grpc
from onnx_factory import affine_model, two_input_model
from stratus.api import create_app
from stratus.grpc import inference_pb2 as pb
from stratus.grpc.inference_pb2_grpc import GRPCInferenceServiceStub

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Any], Any]]:
    app = create_app(make_settings(tmp_path_factory.mktemp("grpc-bad") / "home", max_request_bytes=LIMIT))
    address = serve_grpc(app)
    with TestClient(app) as http:
        as_admin(http)
        for name, model in (("affine", affine_model()), ("pair", two_input_model())):
            assert http.post(f"/api/v1/models/{name}/versions", files={"file": ("m.onnx", model)}).status_code == 201
        auth = (("authorization", f"Bearer {admin_key_of(http)}"),)
        with grpc.insecure_channel(address) as channel:
            stub = GRPCInferenceServiceStub(channel)
            yield lambda request: stub.ModelInfer(request, metadata=auth, timeout=scaled(30))


def _affine(shape: list[int], datatype: str = "FP32", raw: list[bytes] | None = None, **extra: Any) -> Any:
    request = pb.ModelInferRequest(**{"model_name": "affine", **extra})
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    if raw is not None:
        request.raw_input_contents.extend(raw)
    return request


def _floats(count: int) -> bytes:
    return np.arange(count, dtype="<f4").tobytes()


def _typed(datatype: str, field: str, values: list[Any], shape: list[int] | None = None) -> Any:
    request = pb.ModelInferRequest(model_name="affine")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape or [1, len(values)])
    getattr(tensor.contents, field).extend(values)
    return request


def _twice() -> Any:
    request = _affine([1, 3], raw=[_floats(3), _floats(3)])
    request.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    return request


def _timeout_text() -> Any:
    request = _affine([1, 3], raw=[_floats(3)])
    request.parameters["timeout"].string_param = "soon"
    return request


BAD: dict[str, tuple[Callable[[], Any], str]] = {
    "wrong shape": (lambda: _affine([1, 4], raw=[_floats(4)]), "shape"),
    "wrong rank": (lambda: _affine([3], raw=[_floats(3)]), "rank"),
    "wrong datatype": (lambda: _affine([1, 3], "INT64", raw=[np.arange(3, dtype="<i8").tobytes()]), "INT64"),
    "unknown datatype": (lambda: _affine([1, 3], "FP128", raw=[_floats(3)]), "unknown datatype"),
    "raw of the wrong length": (lambda: _affine([1, 3], raw=[_floats(2)]), "needs 12"),
    "oversize shape": (lambda: _affine([2**40, 2**40], raw=[b""]), "shape"),
    "oversize shape without data": (lambda: _affine([2**62, 3], raw=[_floats(3)]), "shape"),
    "70 dimensions": (lambda: _affine([1] * 70, raw=[_floats(1)]), "dimensions"),
    "negative dimension": (lambda: _affine([-1, 3], raw=[_floats(3)]), "shape"),
    "more raw entries than inputs": (lambda: _affine([1, 3], raw=[_floats(3), _floats(3)]), "raw_input_contents"),
    "typed values in the wrong field": (lambda: _typed("FP32", "int64_contents", [1, 2, 3]), "fp32_contents"),
    "typed values short of the shape": (lambda: _typed("FP32", "fp32_contents", [1.0, 2.0], [1, 3]), "needs 3"),
    "FP16 typed": (lambda: _typed("FP16", "fp32_contents", [1.0, 2.0, 3.0]), "raw_input_contents"),
    "INT8 out of range": (lambda: _typed("INT8", "int_contents", [1, 300, 3]), "out of range"),
    "UINT16 out of range": (lambda: _typed("UINT16", "uint_contents", [1, 70000, 3]), "out of range"),
    "no data": (lambda: _affine([1, 3]), "needs 3"),
    "no inputs": (lambda: pb.ModelInferRequest(model_name="affine"), "inputs"),
    "no model name": (lambda: _affine([1, 3], raw=[_floats(3)], model_name=""), "model_name"),
    "input given twice": (_twice, "twice"),
    "timeout as text": (_timeout_text, "timeout"),
    "unknown output": (lambda: _affine([1, 3], raw=[_floats(3)], outputs=[{"name": "nope"}]), "nope"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_tensor_is_invalid_argument(call: Callable[[Any], Any], case: str) -> None:
    build, words = BAD[case]
    with pytest.raises(grpc.RpcError) as caught:
        call(build())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (case, caught.value.details())
    assert words in caught.value.details(), caught.value.details()


def test_malformed_raw_bytes_elements(call: Callable[[Any], Any]) -> None:
    request = pb.ModelInferRequest(model_name="pair")
    for name, datatype, shape in (("a", "FP32", [1, 2]), ("b", "INT64", [1, 2]), ("text", "BYTES", [1])):
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    element = b"hello"
    good = [_floats(2), np.array([1, 2], dtype="<i8").tobytes(), struct.pack("<I", len(element)) + element]
    request.raw_input_contents.extend(good)
    assert call(request).model_name == "pair"
    for broken in (struct.pack("<I", 9) + element, element, good[2] + b"x"):
        request.raw_input_contents[2] = broken
        with pytest.raises(grpc.RpcError) as caught:
            call(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()


def test_typed_contents_of_each_kind_equal_raw_contents(call: Callable[[Any], Any]) -> None:
    """INT64 and BYTES inputs sent typed answer exactly what the same inputs sent raw answer."""
    a, b, text = np.array([[0.5, 1.5]], dtype=np.float32), np.array([[3, -4]], dtype=np.int64), [b"x", b""]
    typed = pb.ModelInferRequest(model_name="pair")
    typed.inputs.add(name="a", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend(a.ravel().tolist())
    typed.inputs.add(name="b", datatype="INT64", shape=[1, 2]).contents.int64_contents.extend(b.ravel().tolist())
    typed.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.extend(text[:1])
    raw = pb.ModelInferRequest(model_name="pair")
    for name, datatype, shape in (("a", "FP32", [1, 2]), ("b", "INT64", [1, 2]), ("text", "BYTES", [1])):
        raw.inputs.add(name=name, datatype=datatype, shape=shape)
    raw.raw_input_contents.extend([a.tobytes(), b.tobytes(), struct.pack("<I", 1) + b"x"])
    ours, theirs = call(typed), call(raw)
    assert list(ours.raw_output_contents) == list(theirs.raw_output_contents)
    by_name = dict(zip([o.name for o in ours.outputs], ours.raw_output_contents, strict=True))
    np.testing.assert_array_equal(np.frombuffer(by_name["sum"], "<f4"), (a + b).ravel())


def test_message_over_the_request_limit_is_resource_exhausted(call: Callable[[Any], Any]) -> None:
    """gRPC refuses a message over max_request_bytes itself, before it is decoded: HTTP's 413."""
    rows = LIMIT // 12 + 1
    with pytest.raises(grpc.RpcError) as caught:
        call(_affine([rows, 3], raw=[_floats(rows * 3)]))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unknown_model_is_not_found(call: Callable[[Any], Any]) -> None:
    request = _affine([1, 3], raw=[_floats(3)], model_name="ghost")
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_good_request_still_served(call: Callable[[Any], Any]) -> None:
    response = call(_affine([2, 3], raw=[_floats(6)], id="ok"))
    assert response.id == "ok" and list(response.outputs[0].shape) == [2, 3]
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], "<f4"), np.arange(6) * 2.0 + 1.0)
