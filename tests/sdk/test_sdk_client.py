"""The Python SDK against a real server: registration by conversion, predict, typed errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conftest import LiveServer
from onnx_factory import affine_model, two_input_model
from stratus import Client, protocol
from stratus.errors import Conflict, InvalidInput, NotFound, UnsafeFormat

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Client:
    with Client(live_server.url, api_key=live_server.admin_key) as c:
        yield c  # type: ignore[misc]


def test_register_sklearn_pipeline_and_predict(client: Client) -> None:
    X, y = load_iris(return_X_y=True)
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    info = client.register_model("sdk-iris", estimator, sample_input=X[:20], metrics={"accuracy": 0.97})
    assert info["version"] == 1 and info["lineage"]["source"].startswith("sklearn:")
    assert client.get_model("sdk-iris")["task"] == "classification"
    out = client.predict("sdk-iris", X.astype(np.float32))
    assert (out["label"] == estimator.predict(X)).all()
    assert out["probabilities"].dtype == np.float32


def test_register_regressor_within_tolerance(client: Client) -> None:
    X, y = load_diabetes(return_X_y=True)
    estimator = LinearRegression().fit(X, y)
    client.register_model("sdk-diabetes", estimator, sample_input=X[:50])
    out = client.predict("sdk-diabetes", X[:50].astype(np.float32))
    (values,) = out.values()
    np.testing.assert_allclose(values.ravel(), estimator.predict(X[:50]), rtol=1e-3, atol=1e-2)


def test_register_torch_module(client: Client) -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    example = torch.randn(5, 4)
    info = client.register_model("sdk-mlp", module, sample_input=example)
    assert info["signature"]["inputs"][0]["shape"] == [-1, 4]
    out = client.predict("sdk-mlp", example.numpy())
    with torch.no_grad():
        expected = module(example).numpy()
    (values,) = out.values()
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-5)


def test_register_onnx_bytes_aliases_and_versions(client: Client) -> None:
    client.register_model("sdk-affine", affine_model(scale=1.0))
    client.register_model("sdk-affine", affine_model(scale=2.0))
    client.set_alias("sdk-affine", "production", 1)
    x = np.ones((2, 3), dtype=np.float32)
    assert client.predict("sdk-affine", x)["y"].tolist() == [[2.0] * 3] * 2
    assert client.predict("sdk-affine", {"x": x}, version=2)["y"].tolist() == [[3.0] * 3] * 2
    assert [v["version"] for v in client.list_versions("sdk-affine")] == [1, 2]
    client.delete_alias("sdk-affine", "production")
    assert client.archive_version("sdk-affine", 2)["status"] == "archived"
    assert client.predict("sdk-affine", x)["y"][0, 0] == 2.0


def test_typed_errors_carry_the_server_message(client: Client) -> None:
    with pytest.raises(NotFound, match="does not exist") as info:
        client.get_model("sdk-nothing")
    assert protocol.status_for(info.value) == 404 and "(HTTP 404)" in str(info.value)
    with pytest.raises(InvalidInput, match="shape"):
        client.predict("iris", np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(UnsafeFormat, match="pickle"):
        client.register_model("sdk-bad", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")
    client.register_model("sdk-dup", affine_model(), version=3)
    with pytest.raises(Conflict, match="immutable"):
        client.register_model("sdk-dup", affine_model(scale=5.0), version=3)
    with pytest.raises(InvalidInput, match="sample_input"):
        client.register_model("sdk-torch", torch.nn.Linear(2, 2))


def test_predict_sends_json_or_binary_tensors_with_the_same_answer(client: Client) -> None:
    from stratus.sdk.client import BINARY_FROM_ELEMENTS

    client.register_model("sdk-encodings", two_input_model())
    rows = BINARY_FROM_ELEMENTS  # a batch past the automatic switch to binary, and one row below it
    for count in (1, rows):
        inputs = {
            "a": np.arange(2 * count, dtype=np.float32).reshape(count, 2) / 3,
            "b": np.arange(2 * count, dtype=np.int64).reshape(count, 2) - 2**40,
            "text": np.array([f"t\u00e9xt {i}" for i in range(count)], dtype=object),
        }
        answers = [client.predict("sdk-encodings", inputs, binary=b) for b in (True, False, None)]
        for out in answers:
            assert list(out["text_out"]) == [f"t\u00e9xt {i}".encode() for i in range(count)]
            np.testing.assert_array_equal(out["sum"], inputs["a"] + inputs["b"].astype(np.float32))
            out["sum"][0, 0] = -1.0  # the caller owns what predict returns, binary views included
