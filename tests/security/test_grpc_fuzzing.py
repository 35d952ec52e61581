"""Generated bad tensors over gRPC: shapes at the edges of int64 and past numpy's rank, unknown datatypes,
raw and typed contents of any length, several inputs and duplicates. No request gets INTERNAL or UNKNOWN
(gRPC's 5xx), and without a key none gets past UNAUTHENTICATED."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import admin_key_of, as_admin, make_settings, scaled
from grpc_helpers import serve_grpc
from onnx_factory import affine_model
from stratus.api import create_app
from stratus.grpc import inference_pb2 as pb
from stratus.grpc.inference_pb2_grpc import GRPCInferenceServiceStub

EXAMPLES = 400
DATATYPES = ["FP32", "FP64", "FP16", "INT8", "INT64", "UINT8", "UINT64", "BOOL", "BYTES", "fp32", "", "FP128"]
CONTENT_FIELDS = ["bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents"]
CONTENT_FIELDS += ["fp32_contents", "fp64_contents", "bytes_contents"]
EDGE_DIMS = [-(2**63), -1, 0, 1, 2, 3, 4, 2**31, 2**32 + 1, 2**62, 2**63 - 1]
ACCEPTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


@pytest.fixture(scope="module")
def stub_and_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GRPCInferenceServiceStub, str]]:
    app = create_app(make_settings(tmp_path_factory.mktemp("grpc-fuzz") / "home", max_request_bytes=64 * 1024))
    address = serve_grpc(app)
    with TestClient(app) as http:
        as_admin(http)
        r = http.post("/api/v1/models/affine/versions", files={"file": ("a.onnx", affine_model())})
        assert r.status_code == 201
        with grpc.insecure_channel(address) as channel:
            yield GRPCInferenceServiceStub(channel), admin_key_of(http)


@st.composite
def tensor(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(st.lists(st.sampled_from(EDGE_DIMS) | st.integers(0, 5), max_size=70))
    entry: dict[str, Any] = {
        "name": draw(st.sampled_from(["x", "x", "y", ""])),
        "datatype": draw(st.sampled_from(DATATYPES)),
        "shape": shape,
    }
    if draw(st.booleans()):
        field = draw(st.sampled_from(CONTENT_FIELDS))
        values: st.SearchStrategy[Any] = {
            "bool_contents": st.booleans(),
            "int_contents": st.integers(-(2**31), 2**31 - 1),
            "int64_contents": st.integers(-(2**63), 2**63 - 1),
            "uint_contents": st.integers(0, 2**32 - 1),
            "uint64_contents": st.integers(0, 2**64 - 1),
            "fp32_contents": st.floats(width=32),
            "fp64_contents": st.floats(),
            "bytes_contents": st.binary(max_size=8),
        }[field]
        entry["contents"] = {field: draw(st.lists(values, max_size=12))}
    return entry


@st.composite
def infer_request(draw: st.DrawFn) -> Any:
    inputs = draw(st.lists(tensor(), max_size=3))
    raw = draw(st.lists(st.binary(max_size=64), max_size=4)) if draw(st.booleans()) else []
    outputs = [{"name": n} for n in draw(st.lists(st.sampled_from(["y", "y", "nope", ""]), max_size=2))]
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["affine", "affine", "ghost", ""])),
        model_version=draw(st.sampled_from(["", "", "1", "-1", "latest", "9" * 30])),
        inputs=inputs,
        outputs=outputs,
        raw_input_contents=raw,
    )
    if draw(st.booleans()):
        request.parameters["timeout"].int64_param = draw(st.integers(-(2**63), 2**63 - 1))
    return request


@st.composite
def near_valid_request(draw: st.DrawFn) -> Any:
    """A good affine row with at most one thing off, so that generated requests also reach the model."""
    rows = draw(st.integers(0, 3))
    shape = [rows, 3, *draw(st.sampled_from([[], [], [], [1], [2**40]]))]
    raw = b"\0" * max(0, rows * 12 + draw(st.sampled_from([0, 0, 0, -4, 4, 1])))
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["affine", "ghost"])),
        inputs=[{"name": "x", "datatype": draw(st.sampled_from(["FP32", "FP32", "FP64", "BYTES"])), "shape": shape}],
        raw_input_contents=[raw],
    )
    return request


def _row(model: str) -> Any:
    return pb.ModelInferRequest(
        model_name=model, inputs=[{"name": "x", "datatype": "FP32", "shape": [1, 3]}], raw_input_contents=[b"\0" * 12]
    )


def test_fuzzed_tensors_never_internal(stub_and_key: tuple[GRPCInferenceServiceStub, str]) -> None:
    stub, key = stub_and_key
    auth = (("authorization", f"Bearer {key}"),)
    seen: dict[grpc.StatusCode, int] = {}
    failures: list[str] = []

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(request=st.one_of(infer_request(), near_valid_request(), near_valid_request()), with_key=st.booleans())
    # Always, whatever is generated: a good row reaches the model, and the same row for a missing model.
    @example(request=_row("affine"), with_key=True)
    @example(request=_row("ghost"), with_key=True)
    def run(request: Any, with_key: bool) -> None:
        try:
            stub.ModelInfer(request, metadata=auth if with_key else (), timeout=scaled(30))
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
            details = exc.details()
        else:
            details = ""
        seen[code] = seen.get(code, 0) + 1
        if with_key and code not in ACCEPTED:
            failures.append(f"{code}: {details} for {request}"[:600])
        if not with_key and code != grpc.StatusCode.UNAUTHENTICATED:
            failures.append(f"no key: {code} for {request}"[:600])

    run()
    assert failures == []
    assert seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) >= EXAMPLES // 4
    assert seen.get(grpc.StatusCode.OK, 0) >= 1 and seen.get(grpc.StatusCode.NOT_FOUND, 0) >= 1, seen
    assert sum(seen.values()) >= EXAMPLES
