from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from onnx_factory import affine_model, two_input_model


@pytest.fixture
def app(empty_app: TestClient) -> TestClient:
    for name, data in (("affine", affine_model()), ("multi", two_input_model())):
        assert empty_app.post(f"/api/v1/models/{name}/versions", files={"file": ("m.onnx", data)}).status_code == 201
    return empty_app


def test_instances_rows_single_input(app: TestClient) -> None:
    r = app.post("/v1/models/affine:predict", json={"instances": [[1, 2, 3], [0, 0, 0]]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [[3.0, 5.0, 7.0], [1.0, 1.0, 1.0]]}
    r = app.post("/v1/models/affine/versions/1:predict", json={"inputs": [[1, 1, 1]]})
    assert r.json() == {"predictions": [[3.0, 3.0, 3.0]]}


def test_instances_objects_multi_input(app: TestClient) -> None:
    rows = [{"a": [1, 2], "b": [3, 4], "text": "x"}, {"a": [0, 0], "b": [1, 1], "text": "y"}]
    r = app.post("/v1/models/multi:predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [
        {"sum": [4.0, 6.0], "text_out": "x"},
        {"sum": [1.0, 1.0], "text_out": "y"},
    ]
    r = app.post("/v1/models/multi:predict", json={"inputs": {"a": [[1, 1]], "b": [[1, 1]], "text": ["z"]}})
    assert r.json()["predictions"] == [{"sum": [2.0, 2.0], "text_out": "z"}]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"instances": []}, "non-empty"),
        ({}, "exactly one"),
        ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, "exactly one"),
        ({"instances": [[1, 2], [1, 2, 3]]}, "cannot read"),
        ({"instances": [["a", "b", "c"]]}, "cannot read"),
        ({"instances": [[1, 2]]}, "shape"),
    ],
)
def test_bad_requests(app: TestClient, body: object, needle: str) -> None:
    r = app.post("/v1/models/affine:predict", json=body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]


def test_multi_input_needs_objects(app: TestClient) -> None:
    r = app.post("/v1/models/multi:predict", json={"instances": [[1, 2]]})
    assert r.status_code == 400 and "several inputs" in r.json()["error"]


def test_model_status(app: TestClient) -> None:
    body = app.get("/v1/models/affine").json()
    assert body["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
    assert app.get("/v1/models/nope").status_code == 404
