"""The official Triton client against a real server: the samples must be served correctly."""

from __future__ import annotations

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
