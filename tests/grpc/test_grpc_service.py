"""The Open Inference Protocol over gRPC, called with tritonclient.grpc unmodified and with a plain grpcio
client generated from Stratus' .proto, against a real gRPC server on a free loopback port (started by the
app's lifespan, as `stratus serve` starts it). Answers are compared with the HTTP API's for the same input."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from conftest import admin_key_of, as_admin, free_port, make_settings, scaled, start_server
from grpc_helpers import metadata, serve_grpc
from stratus.api import create_app
from stratus.grpc import inference_pb2 as pb
from stratus.grpc.inference_pb2_grpc import GRPCInferenceServiceStub

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)
SENTENCES = [b"Stratus serves models over gRPC.", b"A second, somewhat longer sentence to embed."]


@pytest.fixture(scope="module")
def world(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    app = create_app(make_settings(tmp_path_factory.mktemp("grpc") / "home", sample_cache))
    address = serve_grpc(app)
    with TestClient(app) as http:
        as_admin(http)
        key = admin_key_of(http)
        client = triton.InferenceServerClient(address)
        channel = grpc.insecure_channel(address)
        yield {
            "http": http,
            "triton": client,
            "stub": GRPCInferenceServiceStub(channel),
            "key": key,
            "auth": metadata(key),
        }
        channel.close()
        client.close()


def _status(call: Any) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status())


def _iris_input(rows: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


def test_health_is_public_and_server_metadata_needs_a_key(world: dict[str, Any]) -> None:
    client: triton.InferenceServerClient = world["triton"]
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(headers=world["auth"])
    assert meta.name == "stratus" and "model_repository" in meta.extensions
    assert _status(client.get_server_metadata) == "StatusCode.UNAUTHENTICATED"


def test_model_metadata_is_the_http_metadata(world: dict[str, Any]) -> None:
    client: triton.InferenceServerClient = world["triton"]
    for name in ("iris", "minilm"):
        meta = client.get_model_metadata(name, headers=world["auth"])
        http = world["http"].get(f"/v2/models/{name}").json()
        assert meta.name == http["name"] and list(meta.versions) == http["versions"]
        assert meta.platform == http["platform"]
        for ours, theirs in ((meta.inputs, http["inputs"]), (meta.outputs, http["outputs"])):
            assert [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ours] == theirs
    version = client.get_model_metadata("iris", "1", headers=world["auth"])
    assert list(version.versions) == ["1"]
    assert _status(lambda: client.get_model_metadata("ghost", headers=world["auth"])) == "StatusCode.NOT_FOUND"


def test_infer_fp32_iris_equals_the_http_answer(world: dict[str, Any]) -> None:
    client: triton.InferenceServerClient = world["triton"]
    result = client.infer("iris", [_iris_input(ROWS)], headers=world["auth"], request_id="req-7")
    response = result.get_response()
    assert response.model_name == "iris" and response.model_version == "1" and response.id == "req-7"
    body = {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": ROWS.ravel().tolist()}]}
    http = {o["name"]: o for o in world["http"].post("/v2/models/iris/infer", json=body).json()["outputs"]}
    np.testing.assert_array_equal(result.as_numpy("label"), np.array(http["label"]["data"]))
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, 3)
    np.testing.assert_array_equal(probabilities.ravel(), np.array(http["probabilities"]["data"], dtype=np.float32))
    # Only the outputs asked for, in the order asked.
    only = client.infer(
        "iris", [_iris_input(ROWS[:1])], outputs=[triton.InferRequestedOutput("probabilities")], headers=world["auth"]
    )
    assert [o.name for o in only.get_response().outputs] == ["probabilities"]


def test_infer_bytes_minilm_equals_the_http_answer(world: dict[str, Any]) -> None:
    client: triton.InferenceServerClient = world["triton"]
    text = triton.InferInput("text", [len(SENTENCES)], "BYTES")
    text.set_data_from_numpy(np.array(SENTENCES, dtype=object))
    result = client.infer("minilm", [text], headers=world["auth"], client_timeout=scaled(30))
    embedding = result.as_numpy("embedding")
    assert embedding.shape == (2, 384) and embedding.dtype == np.float32
    body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": [s.decode() for s in SENTENCES]}]}
    http = {o["name"]: o for o in world["http"].post("/v2/models/minilm/infer", json=body).json()["outputs"]}
    expected = np.array(http["embedding"]["data"], dtype=np.float32).reshape(2, 384)
    np.testing.assert_allclose(embedding, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("token_count"), np.array(http["token_count"]["data"]))


def test_plain_grpcio_client_with_typed_contents(world: dict[str, Any]) -> None:
    """A client generated from the .proto, sending typed fp32_contents instead of raw bytes."""
    stub: GRPCInferenceServiceStub = world["stub"]
    auth = (("authorization", f"Bearer {world['key']}"),)
    request = pb.ModelInferRequest(model_name="iris", id="typed")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[3, 4])
    tensor.contents.fp32_contents.extend(ROWS.ravel().tolist())
    response = stub.ModelInfer(request, metadata=auth, timeout=scaled(30))
    outputs = {o.name: (o, raw) for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)}
    output, raw = outputs["probabilities"]
    assert output.datatype == "FP32" and list(output.shape) == [3, 3]
    tritons = world["triton"].infer("iris", [_iris_input(ROWS)], headers=world["auth"])
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(3, 3), tritons.as_numpy("probabilities"))
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=scaled(10)).live
    ready = stub.ModelReady(pb.ModelReadyRequest(name="iris"), metadata=auth, timeout=scaled(30))
    assert ready.ready
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=scaled(10))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert dict(caught.value.trailing_metadata())["stratus-error-kind"] == "unauthenticated"


def test_repository_index_load_and_unload(world: dict[str, Any]) -> None:
    client: triton.InferenceServerClient = world["triton"]
    auth = world["auth"]

    def states() -> dict[str, str]:
        return {m.name: m.state for m in client.get_model_repository_index(headers=auth).models}

    client.load_model("digits", headers=auth)
    assert states()["digits"] == "READY" and {"iris", "minilm"} <= set(states())
    assert client.is_model_ready("digits", headers=auth)
    client.unload_model("digits", headers=auth)
    assert states()["digits"] == "UNAVAILABLE"
    http = {row["name"]: row["state"] for row in world["http"].post("/v2/repository/index", json={}).json()}
    assert http == states()
    # A model file or config in the request is refused, as over HTTP: the server reads only registered models.
    assert _status(lambda: client.load_model("digits", config="{}", headers=auth)) == "StatusCode.INVALID_ARGUMENT"
    assert _status(lambda: client.load_model("ghost", headers=auth)) == "StatusCode.NOT_FOUND"


def test_keys_and_scopes(world: dict[str, Any]) -> None:
    client: triton.InferenceServerClient = world["triton"]
    http: TestClient = world["http"]
    keys = {scope: http.post("/api/v1/keys", json={"scopes": [scope]}).json()["key"] for scope in ("read", "predict")}
    rows = [_iris_input(ROWS[:1])]
    wrong = metadata("stk_000000000000_" + "x" * 43)
    assert _status(lambda: client.infer("iris", rows, headers=wrong)) == "StatusCode.UNAUTHENTICATED"
    assert _status(lambda: client.infer("iris", rows)) == "StatusCode.UNAUTHENTICATED"
    basic = {"authorization": "Basic dXNlcjpwYXNz"}
    assert _status(lambda: client.infer("iris", rows, headers=basic)) == "StatusCode.UNAUTHENTICATED"
    read = metadata(keys["read"])
    assert client.get_model_metadata("iris", headers=read).name == "iris"
    assert _status(lambda: client.infer("iris", rows, headers=read)) == "StatusCode.PERMISSION_DENIED"
    predict = metadata(keys["predict"])
    assert client.infer("iris", rows, headers=predict).as_numpy("label").shape == (1,)
    assert _status(lambda: client.unload_model("iris", headers=predict)) == "StatusCode.PERMISSION_DENIED"
    assert _status(lambda: client.load_model("iris", headers=predict)) == "StatusCode.PERMISSION_DENIED"
    # Refusals and changes through gRPC are in the audit log, like the HTTP repository routes.
    events = http.get("/api/v1/audit", params={"limit": 20}).json()["events"]
    actions = [(e["action"], e["status"]) for e in events]
    assert ("gRPC RepositoryModelUnload", 403) in actions and ("gRPC RepositoryModelLoad", 403) in actions


def test_grpc_requests_are_metered_as_protocol_grpc(world: dict[str, Any]) -> None:
    world["triton"].infer("iris", [_iris_input(ROWS[:2])], headers=world["auth"])
    text = world["http"].get("/metrics").text
    assert any('protocol="grpc"' in line and 'model="iris"' in line for line in text.splitlines())


def test_stratus_serve_serves_grpc_on_its_port_and_refuses_a_busy_one(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(tmp_path / "home", None, "--grpc-port", str(port))
    try:
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_ready()
        assert client.get_server_metadata(headers=metadata(server.admin_key)).name == "stratus"
        assert _status(lambda: client.get_server_metadata(headers=metadata("x"))) == "StatusCode.UNAUTHENTICATED"
        client.close()
        args = [sys.executable, "-m", "stratus", "serve", "--no-samples", "--port", str(free_port())]
        second = subprocess.run(
            [*args, "--grpc-port", str(port), "--home", str(tmp_path / "second")],
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
        assert second.returncode != 0
        assert f"cannot serve gRPC on 127.0.0.1:{port}" in second.stdout + second.stderr
    finally:
        server.stop()


def test_a_keys_rate_limit_applies_over_grpc(world: dict[str, Any]) -> None:
    client: triton.InferenceServerClient = world["triton"]
    key = world["http"].post("/api/v1/keys", json={"scopes": ["predict"], "rate_limit_rps": 0.01}).json()["key"]
    rows = [_iris_input(ROWS[:1])]
    statuses = []
    for _ in range(3):  # a bucket of one token, refilled once every 100 s
        try:
            client.infer("iris", rows, headers=metadata(key))
            statuses.append("OK")
        except InferenceServerException as exc:
            statuses.append(str(exc.status()))
    assert statuses == ["OK", "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.RESOURCE_EXHAUSTED"]
