"""The official Triton client against a real server: the samples must be served correctly."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from conftest import KeyedTritonClient, LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[KeyedTritonClient]:
    client = KeyedTritonClient(live_server)
    yield client
    client.close()


def test_health_and_metadata(client: KeyedTritonClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata()["name"] == "stratus"
    iris = client.get_model_metadata("iris")
    assert iris["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"] for o in iris["outputs"]} == {"label", "probabilities"}
    digits = client.get_model_metadata("digits", "1")
    assert digits["inputs"][0]["shape"] == [-1, 1, 8, 8]
    assert client.is_model_ready("iris")
    assert client.is_model_ready("digits", "1")


@pytest.mark.parametrize("binary", [False, True])
def test_iris_agrees_with_scikit_learn_on_all_rows(client: KeyedTritonClient, binary: bool) -> None:
    X, y = load_iris(return_X_y=True)
    expected = LogisticRegression(max_iter=1000).fit(X, y).predict(X)
    inp = triton.InferInput("input", list(X.shape), "FP32")
    inp.set_data_from_numpy(X.astype(np.float32), binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("label", binary_data=binary),
        triton.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = client.infer("iris", [inp], outputs=outputs, request_id="iris-all")
    labels = result.as_numpy("label")
    assert labels.shape == (150,)
    assert (labels == expected).all()
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (150, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert result.get_response()["model_version"] == "1"


@pytest.mark.parametrize("binary", [False, True])
def test_digits_accuracy_on_test_split(client: KeyedTritonClient, binary: bool) -> None:
    X, y = load_digits(return_X_y=True)
    _, X_test, _, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    batch = (X_test / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    inp = triton.InferInput("input", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=binary)
    result = client.infer("digits", [inp], outputs=[triton.InferRequestedOutput("label", binary_data=binary)])
    accuracy = float((result.as_numpy("label") == y_test).mean())
    assert accuracy >= 0.97, accuracy


def test_errors_surface_through_the_client(client: KeyedTritonClient) -> None:
    inp = triton.InferInput("input", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(triton.InferenceServerException, match="shape"):
        client.infer("iris", [inp])
    with pytest.raises(triton.InferenceServerException, match="does not exist"):
        client.get_model_metadata("no-such-model")


def test_repository_extension(client: KeyedTritonClient) -> None:
    client.unload_model("digits")
    index = {(m["name"], m["version"]): m for m in client.get_model_repository_index()}
    assert index[("digits", "1")]["state"] == "UNAVAILABLE"
    client.load_model("digits")
    index = {(m["name"], m["version"]): m for m in client.get_model_repository_index()}
    assert index[("digits", "1")]["state"] == "READY"
    assert client.is_model_ready("digits")
    with pytest.raises(triton.InferenceServerException, match="only a registered 'version'"):
        client.load_model("digits", config='{"backend": "onnxruntime"}')
    with pytest.raises(triton.InferenceServerException, match="does not exist"):
        client.load_model("no-such-model")


@pytest.mark.parametrize("name", ["iris", "digits", "minilm"])
def test_model_config_extension(client: KeyedTritonClient, name: str) -> None:
    """Triton's `get_model_config` reads the config Stratus derives from the signature and serving config."""
    config = client.get_model_config(name)
    metadata = client.get_model_metadata(name)
    assert config["name"] == name and config["platform"] == "onnxruntime_onnx"
    batched = config["max_batch_size"] > 0
    for kind in ("input", "output"):
        declared = {t["name"]: t for t in metadata[f"{kind}s"]}
        assert {t["name"] for t in config[kind]} == set(declared)
        for tensor in config[kind]:
            spec = declared[tensor["name"]]
            want = "TYPE_STRING" if spec["datatype"] == "BYTES" else f"TYPE_{spec['datatype']}"
            assert tensor["data_type"] == want
            assert tensor["dims"] == ((spec["shape"][1:] if batched else spec["shape"]) or [1])
    assert config["instance_group"][0]["count"] >= 1
    assert ("dynamic_batching" in config) == batched
    assert client.get_model_config(name, "1")["version_policy"] == {"specific": {"versions": [1]}}


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("request_coding", [None, "gzip", "deflate"])
@pytest.mark.parametrize("response_coding", [None, "gzip", "deflate"])
def test_compressed_requests_and_responses(
    client: KeyedTritonClient, binary: bool, request_coding: str | None, response_coding: str | None
) -> None:
    X, _ = load_iris(return_X_y=True)
    inp = triton.InferInput("input", list(X.shape), "FP32")
    inp.set_data_from_numpy(X.astype(np.float32), binary_data=binary)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
    plain = client.infer("iris", [inp], outputs=outputs).as_numpy("probabilities")
    packed = client.infer(
        "iris",
        [inp],
        outputs=outputs,
        request_compression_algorithm=request_coding,
        response_compression_algorithm=response_coding,
    ).as_numpy("probabilities")
    assert packed.shape == (150, 3)
    np.testing.assert_array_equal(packed, plain)


def test_compressed_response_is_compressed_and_a_bomb_gets_413(live_server: LiveServer) -> None:
    body = {"inputs": [{"name": "input", "shape": [150, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2] * 150}]}
    url = f"{live_server.url}/v2/models/iris/infer"
    r = live_server.post(url, json=body, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    # About 1 MB of gzip inflating to 256 MiB, past the 64 MiB request limit: refused by its inflated size.
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    bomb = b"".join([*(packer.compress(zeros) for _ in range(256)), packer.flush()])
    assert 0.5 * 1024 * 1024 < len(bomb) < 1.5 * 1024 * 1024
    r = live_server.post(url, content=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
