"""The V2 codec against hand-built bodies and against the official Triton HTTP client's own encoder/decoder."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from stratus.errors import InvalidInput
from stratus.protocol import InferRequest, RequestedOutput, decode_infer_request, encode_infer_response
from stratus.types import decode_bytes_tensor, encode_bytes_tensor

# One tensor per datatype, with each type's extremes where it has them; shape (2, 3).
SAMPLES: dict[str, np.ndarray[Any, Any]] = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    **{
        dt: np.array([[info.min, info.max, 0], [1, 7, info.max - 1]], dtype=info.dtype)
        for dt, info in (
            ("UINT8", np.iinfo(np.uint8)),
            ("UINT16", np.iinfo(np.uint16)),
            ("UINT32", np.iinfo(np.uint32)),
            ("UINT64", np.iinfo(np.uint64)),
            ("INT8", np.iinfo(np.int8)),
            ("INT16", np.iinfo(np.int16)),
            ("INT32", np.iinfo(np.int32)),
            ("INT64", np.iinfo(np.int64)),
        )
    },
    "FP16": np.array([[0.1, -2.5, 65504.0], [6.1e-5, 0.0, -0.0]], dtype=np.float16),
    "FP32": np.array([[0.1, -2.5, 3.4e38], [1e-38, 0.0, 1 / 3]], dtype=np.float32),
    "FP64": np.array([[0.1, -2.5, 1.7e308], [5e-324, 0.0, 1 / 3]], dtype=np.float64),
    "BYTES": np.array([[b"plain", "grüße".encode(), b""], ["日本語".encode(), "🙂".encode(), b"a b"]], dtype=object),
}
DATATYPES = list(SAMPLES)


def json_data(array: np.ndarray[Any, Any]) -> Any:
    """What a JSON client would send: nested lists, BYTES as strings."""
    if array.dtype == object:
        return [[v.decode() for v in row] for row in array]
    return array.tolist()


def json_request(*inputs: dict[str, Any], **top: Any) -> bytes:
    return orjson.dumps({**top, "inputs": list(inputs)})


def tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def binary_request(tensors: dict[str, tuple[str, bytes, list[int]]], **top: Any) -> tuple[bytes, int]:
    """Inputs as raw bytes after the JSON header, built by hand (independently of the codec)."""
    head = [
        {"name": n, "datatype": dt, "shape": shape, "parameters": {"binary_data_size": len(raw)}}
        for n, (dt, raw, shape) in tensors.items()
    ]
    header = orjson.dumps({**top, "inputs": head})
    return header + b"".join(raw for _, raw, _ in tensors.values()), len(header)


def raw_bytes(array: np.ndarray[Any, Any]) -> bytes:
    if array.dtype == object:
        return b"".join(struct.pack("<I", len(v)) + v for v in array.ravel())
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


def split_response(body: bytes, header_length: int | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        return orjson.loads(body), b""
    return orjson.loads(body[:header_length]), body[header_length:]


def assert_same(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.flags.c_contiguous
    if want.dtype == object:
        assert got.ravel().tolist() == want.ravel().tolist()
        assert all(type(v) is bytes for v in got.ravel())
    else:
        np.testing.assert_array_equal(got, want, strict=True)
        # -0.0 == 0.0, so compare the bits too.
        assert got.tobytes() == want.tobytes()


def decode_error(body: bytes, header_length: int | None = None) -> str:
    with pytest.raises(InvalidInput) as info:
        decode_infer_request(body, header_length)
    return str(info.value)


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", DATATYPES)
def test_json_round_trip(datatype: str) -> None:
    sample = SAMPLES[datatype]
    request = decode_infer_request(json_request(tensor("x", datatype, [2, 3], json_data(sample))), None)
    assert_same(request.inputs["x"], sample)

    body, header_length = encode_infer_response(
        model_name="m", model_version="3", request_id=None, outputs=request.inputs, requested=request
    )
    assert header_length is None
    response = orjson.loads(body)
    assert response["model_name"] == "m" and response["model_version"] == "3" and "id" not in response
    (out,) = response["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("x", datatype, [2, 3])
    assert "parameters" not in out
    flat = sample.ravel().tolist()
    if datatype == "BYTES":
        assert out["data"] == [v.decode() for v in flat]
    else:
        # The data is flat, and parses back to exactly the same values in the tensor's dtype.
        assert len(out["data"]) == 6 and not any(isinstance(v, list) for v in out["data"])
        assert_same(np.array(out["data"], dtype=sample.dtype).reshape(2, 3), sample)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_binary_round_trip(datatype: str) -> None:
    sample = SAMPLES[datatype]
    body, length = binary_request({"x": (datatype, raw_bytes(sample), [2, 3])})
    request = decode_infer_request(body, length)
    assert_same(request.inputs["x"], sample)

    request.binary_output = True
    out_body, header_length = encode_infer_response(
        model_name="m", model_version="1", request_id=None, outputs=request.inputs, requested=request
    )
    assert header_length is not None
    head, rest = split_response(out_body, header_length)
    (out,) = head["outputs"]
    assert "data" not in out
    assert out["parameters"] == {"binary_data_size": len(rest)}
    assert rest == raw_bytes(sample)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_nested_and_flat_data_decode_alike(datatype: str) -> None:
    sample = SAMPLES[datatype]
    nested = json_data(sample)
    flat = [v for row in nested for v in row]
    a = decode_infer_request(json_request(tensor("x", datatype, [2, 3], nested)), None).inputs["x"]
    b = decode_infer_request(json_request(tensor("x", datatype, [2, 3], flat)), None).inputs["x"]
    assert_same(a, sample)
    assert_same(b, sample)


def test_mixed_json_and_binary_inputs_keep_their_order() -> None:
    words = np.array([b"x", "ß".encode()], dtype=object)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "INT8", "shape": [3], "parameters": {"binary_data_size": 3}},
                tensor("j", "FP32", [2], [1, 2.5]),
                {"name": "w", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 11}},
                {"name": "f", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}},
            ]
        }
    )
    body = header + bytes([1, 2, 255]) + raw_bytes(words) + struct.pack("<d", 0.25)
    inputs = decode_infer_request(body, len(header)).inputs
    assert list(inputs) == ["a", "j", "w", "f"]
    assert_same(inputs["a"], np.array([1, 2, -1], dtype=np.int8))
    assert_same(inputs["j"], np.array([1.0, 2.5], dtype=np.float32))
    assert_same(inputs["w"], words)
    assert_same(inputs["f"], np.array([0.25]))
    # 'f' starts at an odd offset in the body: it was copied so that it is aligned.
    assert inputs["f"].flags.aligned


@pytest.mark.parametrize("pad", range(8))
def test_binary_inputs_are_read_only_and_aligned_and_json_inputs_are_owned(pad: int) -> None:
    # JSON allows trailing spaces: they move the tensor's offset in the body, aligned or not.
    body, length = binary_request({"x": ("FP64", raw_bytes(SAMPLES["FP64"]), [2, 3])})
    body = body[:length] + b" " * pad + body[length:]
    binary = decode_infer_request(body, length + pad).inputs["x"]
    assert_same(binary, SAMPLES["FP64"])
    assert binary.flags.aligned and not binary.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        binary[0, 0] = 1.0
    owned = decode_infer_request(json_request(tensor("x", "FP32", [1], [1.0])), None).inputs["x"]
    assert owned.flags.writeable and owned.flags.c_contiguous


def test_aligned_binary_input_is_a_view_of_the_body() -> None:
    sample = SAMPLES["FP64"]
    body, length = binary_request({"x": ("FP64", raw_bytes(sample), [2, 3])})
    pad = -length % 8  # bytes objects keep their data 8-aligned, so offset 0 mod 8 is aligned
    body = body[:length] + b" " * pad + body[length:]
    binary = decode_infer_request(body, length + pad).inputs["x"]
    assert np.shares_memory(binary, np.frombuffer(body, dtype=np.uint8))


def test_scalar_and_empty_tensors() -> None:
    request = decode_infer_request(
        json_request(
            tensor("s", "INT32", [], [7]),
            tensor("e", "FP32", [0, 4], []),
            tensor("b", "BYTES", [0], []),
        ),
        None,
    )
    assert_same(request.inputs["s"], np.array(7, dtype=np.int32))
    assert_same(request.inputs["e"], np.zeros((0, 4), dtype=np.float32))
    assert request.inputs["b"].shape == (0,) and request.inputs["b"].dtype == object
    body, _ = encode_infer_response(
        model_name="m", model_version="1", request_id=None, outputs=request.inputs, requested=None
    )
    outs = {o["name"]: o for o in orjson.loads(body)["outputs"]}
    assert outs["s"]["shape"] == [] and outs["s"]["data"] == [7]
    assert outs["e"]["shape"] == [0, 4] and outs["e"]["data"] == []


def test_json_numbers_convert_to_the_declared_type() -> None:
    inputs = decode_infer_request(
        json_request(
            tensor("f", "FP32", [3], [1, 2.5, -3]),  # ints are fine for floats
            tensor("i", "INT16", [2], [3.0, -4.0]),  # whole floats are fine for ints
            tensor("u", "UINT64", [1], [2**64 - 1]),
        ),
        None,
    ).inputs
    assert_same(inputs["f"], np.array([1, 2.5, -3], dtype=np.float32))
    assert_same(inputs["i"], np.array([3, -4], dtype=np.int16))
    assert_same(inputs["u"], np.array([2**64 - 1], dtype=np.uint64))


def test_float32_json_output_is_short_and_exact() -> None:
    values = np.array([0.9, 0.05, 1 / 3], dtype=np.float32)
    body, _ = encode_infer_response(
        model_name="m", model_version="1", request_id=None, outputs={"p": values}, requested=None
    )
    data = orjson.loads(body)["outputs"][0]["data"]
    assert data[:2] == [0.9, 0.05]
    assert_same(np.array(data, dtype=np.float32), values)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_big_endian_and_strided_outputs(binary: bool) -> None:
    big_endian = np.array([[1.5, -2.0], [3.25, 4.0]], dtype=">f4")
    strided = np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2]
    request = InferRequest(id=None, inputs={}, outputs=None, binary_output=binary)
    body, header_length = encode_infer_response(
        model_name="m", model_version="1", request_id=None, outputs={"b": big_endian, "s": strided}, requested=request
    )
    result = triton.InferenceServerClient.parse_response_body(body, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("b"), big_endian.astype(np.float32), strict=True)
    np.testing.assert_array_equal(result.as_numpy("s"), strided, strict=True)


def test_output_selection_order_and_binary_flags() -> None:
    outputs = {
        "a": np.arange(3, dtype=np.int32),
        "b": np.array([1.5], dtype=np.float64),
        "c": np.array([b"hi"], dtype=object),
    }
    request = decode_infer_request(
        json_request(
            tensor("x", "FP32", [1], [0]),
            outputs=[{"name": "c"}, {"name": "a", "parameters": {"binary_data": False}}],
            parameters={"binary_data_output": True},
        ),
        None,
    )
    assert request.outputs == [RequestedOutput("c", None), RequestedOutput("a", False)]
    assert request.binary_output
    body, header_length = encode_infer_response(
        model_name="m", model_version="1", request_id=None, outputs=outputs, requested=request
    )
    head, rest = split_response(body, header_length)
    assert [o["name"] for o in head["outputs"]] == ["c", "a"]
    c, a = head["outputs"]
    assert c["parameters"] == {"binary_data_size": 6} and rest == struct.pack("<I", 2) + b"hi"
    assert a["data"] == [0, 1, 2] and "parameters" not in a

    # Per-output binary wins over the request default in the other direction too.
    request = InferRequest(id=None, inputs={}, outputs=[RequestedOutput("b", True)], binary_output=False)
    body, header_length = encode_infer_response(
        model_name="m", model_version="1", request_id=None, outputs=outputs, requested=request
    )
    head, rest = split_response(body, header_length)
    assert [o["name"] for o in head["outputs"]] == ["b"] and rest == struct.pack("<d", 1.5)

    # Nothing requested: every output, in the given order, as JSON.
    body, header_length = encode_infer_response(
        model_name="m", model_version="1", request_id=None, outputs=outputs, requested=None
    )
    assert header_length is None
    assert [o["name"] for o in orjson.loads(body)["outputs"]] == ["a", "b", "c"]


def test_unknown_requested_output_is_refused() -> None:
    request = InferRequest(id=None, inputs={}, outputs=[RequestedOutput("nope", None)], binary_output=False)
    with pytest.raises(InvalidInput, match=r"'nope'.*it has 'a'"):
        encode_infer_response(
            model_name="m", model_version="1", request_id=None, outputs={"a": np.zeros(1)}, requested=request
        )


def test_request_id_and_parameters_pass_through() -> None:
    params = {"timeout": 5000, "custom": {"k": [1, "v"]}}
    request = decode_infer_request(json_request(tensor("x", "INT64", [1], [1]), id="req-42", parameters=params), None)
    assert request.id == "req-42"
    assert request.parameters == params
    assert not request.binary_output and request.outputs is None
    body, _ = encode_infer_response(
        model_name="m", model_version="1", request_id=request.id, outputs=request.inputs, requested=request
    )
    assert orjson.loads(body)["id"] == "req-42"


def test_bytes_tensor_helpers() -> None:
    values = np.array([b"", "é".encode(), b"\x00\xff"], dtype=object)
    raw = encode_bytes_tensor(values)
    assert raw == b"\x00\x00\x00\x00" + b"\x02\x00\x00\x00\xc3\xa9" + b"\x02\x00\x00\x00\x00\xff"
    assert_same(decode_bytes_tensor(raw, 3), values)
    # str elements (numpy unicode arrays too) are written as UTF-8.
    assert encode_bytes_tensor(np.array(["é"])) == b"\x02\x00\x00\x00\xc3\xa9"
    assert decode_bytes_tensor(b"", 0).shape == (0,)


def test_non_utf8_bytes_output_in_json_is_replaced_not_fatal() -> None:
    body, _ = encode_infer_response(
        model_name="m",
        model_version="1",
        request_id=None,
        outputs={"t": np.array([b"\xff"], dtype=object)},
        requested=None,
    )
    assert orjson.loads(body)["outputs"][0]["data"] == ["\ufffd"]


# --- interop with tritonclient --------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_decodes_tritonclient_requests(datatype: str, binary: bool) -> None:
    sample = SAMPLES[datatype]
    first = triton.InferInput("first", [2, 3], datatype).set_data_from_numpy(sample, binary_data=binary)
    # A second input after the first checks the binary offsets.
    second = triton.InferInput("second", [1], "INT32").set_data_from_numpy(
        np.array([-9], dtype=np.int32), binary_data=binary
    )
    outputs = [triton.InferRequestedOutput("y", binary_data=True), triton.InferRequestedOutput("z", binary_data=False)]
    body, json_size = triton.InferenceServerClient.generate_request_body(
        [first, second], outputs=outputs, request_id="r1", parameters={"p": 1}
    )
    request = decode_infer_request(body, json_size)
    assert_same(request.inputs["first"], sample)
    assert_same(request.inputs["second"], np.array([-9], dtype=np.int32))
    assert request.id == "r1"
    assert request.parameters["p"] == 1
    assert request.outputs == [RequestedOutput("y", True), RequestedOutput("z", False)]


def test_tritonclient_without_outputs_asks_for_binary() -> None:
    x = triton.InferInput("x", [1], "FP32").set_data_from_numpy(np.ones(1, np.float32), binary_data=False)
    body, json_size = triton.InferenceServerClient.generate_request_body([x])
    request = decode_infer_request(body, json_size)
    assert request.binary_output and request.outputs is None


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_tritonclient_parses_our_responses(datatype: str, binary: bool) -> None:
    sample = SAMPLES[datatype]
    outputs = {"out": sample, "extra": np.array([[1.25, -3.0]], dtype=np.float32)}
    request = InferRequest(
        id="r7",
        inputs={},
        outputs=[RequestedOutput("out", binary), RequestedOutput("extra", None)],
        binary_output=True,
    )
    body, header_length = encode_infer_response(
        model_name="m", model_version="2", request_id="r7", outputs=outputs, requested=request
    )
    result = triton.InferenceServerClient.parse_response_body(
        body, verbose=False, header_length=header_length, content_encoding=None
    )
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("m", "2", "r7")
    got = result.as_numpy("out")
    if datatype == "BYTES":
        # tritonclient hands JSON BYTES back as str and binary BYTES as bytes.
        want = [v.decode() for v in sample.ravel()] if not binary else sample.ravel().tolist()
        assert got.shape == (2, 3) and got.ravel().tolist() == want
    else:
        np.testing.assert_array_equal(got, sample, strict=True)
    np.testing.assert_array_equal(result.as_numpy("extra"), outputs["extra"], strict=True)


# --- errors ---------------------------------------------------------------------------------------


def _x(datatype: str, shape: Any, data: Any) -> bytes:
    return json_request(tensor("x", datatype, shape, data))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"id": "a"}', "'inputs'"),
        (b'{"inputs": []}', "'inputs'"),
        (b'{"inputs": {"name": "x"}}', "'inputs'"),
        (b'{"inputs": [7]}', "inputs[0]"),
        (orjson.dumps({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}), "inputs[0] has no 'name'"),
        (orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}), "input 'x': shape"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [1], "data": [1]}]}), "input 'x': unknown datatype None"),
        (_x("FLOAT", [1], [1]), "input 'x': unknown datatype 'FLOAT'"),
        (_x(["FP32"], [1], [1]), "input 'x': unknown datatype ['FP32']"),
        (_x("FP32", [2, -1], [1]), "input 'x': shape must be a list of non-negative integers"),
        (_x("FP32", [2, 1.5], [1]), "input 'x': shape must be"),
        (_x("FP32", [True], [1]), "input 'x': shape must be"),
        (_x("FP32", "2", [1]), "input 'x': shape must be"),
        (json_request(tensor("x", "FP32", [1], [1]), tensor("x", "FP32", [1], [2])), "input 'x' is given twice"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}), "input 'x' has no 'data'"),
        (_x("FP32", [1], 1.0), "input 'x': 'data' must be a list"),
        (_x("FP32", [2, 4], [1, 2, 3, 4, 5, 6]), "input 'x': shape [2, 4] needs 8 values but 6 were given"),
        (_x("BYTES", [3], ["a", "b"]), "input 'x': shape [3] needs 3 values but 2 were given"),
        (_x("FP32", [3], [[1, 2], [3]]), "input 'x': nested data is ragged"),
        (_x("FP32", [2], [1, "2"]), "input 'x': FP32 data must be numbers, got a string ('2')"),
        (_x("FP32", [2], [1, None]), "input 'x': FP32 data must be numbers, got null"),
        (_x("FP32", [2], [True, False]), "input 'x': FP32 data must be numbers, got a boolean"),
        (_x("INT64", [2], [1, 2.5]), "input 'x': INT64 data must be whole numbers"),
        (_x("INT8", [1], [300]), "input 'x': values are out of range for INT8"),
        (_x("INT8", [1], [300.0]), "input 'x': values are out of range for INT8"),
        (_x("UINT64", [1], [-1]), "input 'x': values are out of range for UINT64"),
        (_x("INT64", [1], [2**63]), "input 'x': values are out of range for INT64"),
        # orjson reads integers beyond 64 bits as floats.
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "UINT64", "data": [18446744073709551616]}]}',
            "input 'x': values are out of range for UINT64",
        ),
        (_x("FP16", [1], [1e6]), "input 'x': values are out of range for FP16"),
        (_x("FP32", [1], [1e300]), "input 'x': values are out of range for FP32"),
        (_x("BOOL", [2], [1, 0]), "input 'x': BOOL data must be true or false, got an integer"),
        (_x("BYTES", [2], ["a", 1]), "input 'x': BYTES data must be strings, got an integer"),
        (_x("BYTES", [2], ["a", ["b"]]), "input 'x': BYTES data must be strings, got a list"),
        (json_request(tensor("x", "FP32", [1], [1]), parameters=[1]), "request: 'parameters' must be an object"),
        (
            json_request(tensor("x", "FP32", [1], [1]), parameters={"binary_data_output": "yes"}),
            "parameter 'binary_data_output' must be true or false",
        ),
        (json_request(tensor("x", "FP32", [1], [1]), outputs={"name": "y"}), "'outputs' must be a list"),
        (json_request(tensor("x", "FP32", [1], [1]), outputs=[{}]), "outputs[0] needs a 'name'"),
        (
            json_request(tensor("x", "FP32", [1], [1]), outputs=[{"name": "y"}, {"name": "y"}]),
            "output 'y' is requested twice",
        ),
        (
            json_request(tensor("x", "FP32", [1], [1]), outputs=[{"name": "y", "parameters": {"binary_data": 1}}]),
            "output 'y': parameter 'binary_data' must be true or false",
        ),
        (
            orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": 5, "data": [1]}]}),
            "input 'x': 'parameters' must be an object",
        ),
    ],
)
def test_json_request_errors(body: bytes, expected: str) -> None:
    assert expected in decode_error(body)


def _binary_header(*inputs: dict[str, Any]) -> bytes:
    return orjson.dumps({"inputs": list(inputs)})


def _bin(name: str, datatype: str, shape: list[int], size: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}


def test_binary_request_errors() -> None:
    header = _binary_header(_bin("x", "FP32", [2], 8))
    body = header + struct.pack("<2f", 1, 2)
    assert decode_infer_request(body, len(header)).inputs["x"].tolist() == [1.0, 2.0]

    assert f"Inference-Header-Content-Length is {len(body) + 1} but the body has" in decode_error(body, len(body) + 1)
    assert "Inference-Header-Content-Length is -1" in decode_error(body, -1)
    assert "not valid JSON" in decode_error(body, len(header) - 1)
    assert "input 'x' has binary_data_size but the request has no Inference-Header-Content-Length" in decode_error(
        header
    )
    assert "input 'x': binary_data_size 8 runs past the end" in decode_error(body[:-1], len(header))
    assert "1 bytes of binary data that no input's binary_data_size claims" in decode_error(body + b"\0", len(header))

    wrong_size = _binary_header(_bin("x", "FP32", [3], 8))
    assert "input 'x': binary_data_size is 8 bytes but shape [3] of FP32 needs 12" in decode_error(
        wrong_size + bytes(8), len(wrong_size)
    )
    for bad_size in (-1, 2.0, "8", True):
        h = _binary_header(_bin("x", "FP32", [2], bad_size))
        assert "input 'x': binary_data_size must be a non-negative integer" in decode_error(h + bytes(8), len(h))

    both = _binary_header({**_bin("x", "FP32", [2], 8), "data": [1, 2]})
    assert "input 'x' has both 'data' and binary_data_size" in decode_error(both + bytes(8), len(both))

    bools = _binary_header(_bin("flags", "BOOL", [2], 2))
    assert "input 'flags': binary BOOL data must be bytes 0 or 1" in decode_error(bools + b"\x01\x02", len(bools))

    # Sizes that overlap the next input are caught by that input's own size check.
    two = _binary_header(_bin("a", "INT32", [1], 8), _bin("b", "INT32", [1], 0))
    assert "input 'a': binary_data_size is 8 bytes" in decode_error(two + bytes(8), len(two))


@pytest.mark.parametrize(
    ("raw", "count", "expected"),
    [
        (b"\x01\x00", 1, "ends after 0 of 1 elements"),
        (b"\x05\x00\x00\x00abc", 1, "element 0 says it has 5 bytes but only 3 remain"),
        (b"\x01\x00\x00\x00a", 2, "ends after 1 of 2 elements"),
        (b"\x01\x00\x00\x00ab", 1, "1 bytes left over after 1 BYTES elements"),
        (b"\xff\xff\xff\xff", 1, "says it has 4294967295 bytes"),
    ],
)
def test_malformed_binary_bytes(raw: bytes, count: int, expected: str) -> None:
    header = _binary_header(_bin("text", "BYTES", [count], len(raw)))
    message = decode_error(header + raw, len(header))
    assert "input 'text'" in message and expected in message


def test_huge_bytes_shape_fails_fast() -> None:
    # Within the element bound, the data running out stops the decoder (the loop is bounded by the buffer)...
    header = _binary_header(_bin("text", "BYTES", [2**25], 4))
    assert "input 'text': binary BYTES data ends after 1 of" in decode_error(header + bytes(4), len(header))
    # ...and beyond it, the declared shape alone is refused before anything is read or allocated.
    header = _binary_header(_bin("text", "BYTES", [2**40], 4))
    assert "input 'text': shape [1099511627776] is too large" in decode_error(header + bytes(4), len(header))
