"""The client side of the V2 codec (what the router sends replicas and the SDK sends servers) against the
server side: requests encoded here decode there, responses encoded there decode here, in both encodings."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from stratus import protocol
from stratus.errors import InvalidInput


def test_wire_round_trip_numbers_and_strings() -> None:
    inputs = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array([b"a", "b\xe9".encode()], dtype=object)}
    body, length = protocol.encode_infer_request(inputs, outputs=["y", "t"])
    decoded = protocol.decode_infer_request(body, length)
    assert np.array_equal(decoded.inputs["x"], inputs["x"]) and list(decoded.inputs["s"]) == list(inputs["s"])
    assert decoded.binary_output and [o.name for o in decoded.outputs or []] == ["y", "t"]
    assert "timeout" not in decoded.parameters
    timed = protocol.decode_infer_request(*protocol.encode_infer_request(inputs, timeout_ms=2.5))
    assert timed.parameters["timeout"] == 2500 and timed.timeout_ms == 2.5
    outputs = {"y": np.array([[1.5, 2.5]], dtype=np.float32), "t": np.array([b"ok"], dtype=object)}
    response, header = protocol.encode_infer_response(
        model_name="m", model_version="3", request_id="r1", outputs=outputs, requested=decoded
    )
    assert header is not None
    back = protocol.decode_infer_response(response, header)
    assert (back.model_name, back.model_version, back.id) == ("m", "3", "r1")
    assert np.array_equal(back.outputs["y"], outputs["y"]) and list(back.outputs["t"]) == [b"ok"]
    json_body, none = protocol.encode_infer_response(
        model_name="m", model_version="4", request_id=None, outputs=outputs, requested=None
    )
    assert none is None
    back = protocol.decode_infer_response(json_body, none)
    assert back.model_version == "4" and back.outputs["y"].dtype == np.float32 and list(back.outputs["t"]) == [b"ok"]


@pytest.mark.parametrize("binary", [True, False])
def test_every_datatype_both_encodings(binary: bool) -> None:
    inputs = {
        "b": np.array([True, False]),
        "u8": np.array([0, 255], dtype=np.uint8),
        "u64": np.array([0, 2**64 - 1], dtype=np.uint64),
        "i64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
        "f16": np.array([0.1, -65504.0], dtype=np.float16),
        "f32": np.array([[1 / 3, 3.4e38]], dtype=np.float32),
        "f64": np.array([1e-300, -2.5]),
        "s": np.array(["héllo", ""], dtype=object),
    }
    body, length = protocol.encode_infer_request(inputs, binary_inputs=binary, binary_outputs=binary)
    assert (length is None) is not binary
    if not binary:
        assert orjson.loads(body)["inputs"][0]["data"] == [True, False]
    decoded = protocol.decode_infer_request(body, length)
    assert decoded.binary_output is binary
    for name, array in inputs.items():
        got = decoded.inputs[name]
        if name == "s":
            assert list(got) == [b"h\xc3\xa9llo", b""]
        else:
            assert got.dtype == array.dtype and np.array_equal(got, array), name
    response, header = protocol.encode_infer_response(
        model_name="m", model_version="1", request_id=None, outputs=decoded.inputs, requested=decoded
    )
    back = protocol.decode_infer_response(response, header).outputs
    assert all(np.array_equal(back[n], decoded.inputs[n]) and back[n].dtype == decoded.inputs[n].dtype for n in back)


@pytest.mark.parametrize(
    ("head", "tail", "expected"),
    [
        ({"outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]},
         b"\0" * 4, "runs past the end of the body"),
        ({"outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 4}}]},
         b"\0" * 4, "needs 8"),
        ({"outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]},
         b"\0" * 8, "bytes of binary data that no output's binary_data_size claims"),
        ({"outputs": [{"name": "y", "datatype": "FP32", "shape": [3], "data": [1, 2]}]}, b"", "needs 3 values"),
        ({"outputs": [{"name": "y", "datatype": "NOPE", "shape": [1], "data": [1]}]}, b"", "unknown datatype"),
        ({"outputs": [{"name": "y", "datatype": "FP32", "shape": [1] * 65, "data": [1]}]}, b"", "65 dimensions"),
        ({"outputs": {"y": 1}}, b"", "'outputs' must be a list"),
    ],
)  # fmt: skip
def test_response_decoding_checks_like_request_decoding(head: dict[str, object], tail: bytes, expected: str) -> None:
    header = orjson.dumps({"model_name": "m", "model_version": "1", **head})
    with pytest.raises(InvalidInput, match=expected):
        protocol.decode_infer_response(header + tail, len(header) if tail else None)


def test_header_length_is_parsed_strictly() -> None:
    assert protocol.parse_header_length(None) is None and protocol.parse_header_length("12") == 12
    for bad in ("-1", "+1", " 1", "1_0", "١٢", "1" * 5000, str(2**63)):
        with pytest.raises(InvalidInput, match="Inference-Header-Content-Length"):
            protocol.parse_header_length(bad)
