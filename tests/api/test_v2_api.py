from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from onnx_factory import affine_model, two_input_model


@pytest.fixture
def app(empty_app: TestClient) -> TestClient:
    for name, data in (("affine", affine_model()), ("multi", two_input_model())):
        r = empty_app.post(f"/api/v1/models/{name}/versions", files={"file": ("m.onnx", data)})
        assert r.status_code == 201, r.text
    return empty_app


def infer(client: TestClient, name: str, body: object, version: str | None = None):  # type: ignore[no-untyped-def]
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    return client.post(path, json=body)


def test_health_and_server_metadata(app: TestClient) -> None:
    assert app.get("/v2/health/live").json() == {"live": True}
    assert app.get("/v2/health/ready").status_code == 200
    assert app.get("/v2").json()["name"] == "stratus"


def test_model_metadata_and_ready(app: TestClient) -> None:
    meta = app.get("/v2/models/multi").json()
    assert meta["name"] == "multi" and meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "b", "datatype": "INT64", "shape": [-1, 2]},
        {"name": "text", "datatype": "BYTES", "shape": [-1]},
    ]
    assert app.get("/v2/models/multi/versions/1").json()["versions"] == ["1"]
    assert app.get("/v2/models/multi/ready").json() == {"name": "multi", "ready": True}
    assert app.get("/v2/models/multi/versions/1/ready").status_code == 200
    assert app.get("/v2/models/nope/ready").status_code == 404


def test_infer_nested_and_flat_data_with_id_and_output_selection(app: TestClient) -> None:
    body = {
        "id": "req-7",
        "parameters": {"priority": 1},
        "inputs": [
            {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [[1.5, 2.5], [3.5, 4.5]]},
            {"name": "b", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]},
            {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["héllo", "world"]},
        ],
        "outputs": [{"name": "text_out"}],
    }
    r = infer(app, "multi", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "req-7" and out["model_name"] == "multi" and out["model_version"] == "1"
    assert [o["name"] for o in out["outputs"]] == ["text_out"]
    assert out["outputs"][0]["data"] == ["héllo", "world"]
    del body["outputs"]
    out = infer(app, "multi", body).json()
    total = next(o for o in out["outputs"] if o["name"] == "sum")
    assert total["shape"] == [2, 2] and total["data"] == [2.5, 4.5, 6.5, 8.5]


def test_versions_and_aliases_route(app: TestClient) -> None:
    app.post("/api/v1/models/affine/versions", files={"file": ("m.onnx", affine_model(scale=10.0))})
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]}
    assert infer(app, "affine", body).json()["outputs"][0]["data"] == [11.0, 11.0, 11.0]
    assert infer(app, "affine", body, "1").json()["outputs"][0]["data"] == [3.0, 3.0, 3.0]
    app.put("/api/v1/models/affine/aliases/production", json={"version": 1})
    r = infer(app, "affine", body)
    assert r.json()["model_version"] == "1" and r.json()["outputs"][0]["data"] == [3.0, 3.0, 3.0]
    assert infer(app, "affine", body, "latest").json()["model_version"] == "2"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
            400,
            "shape",
        ),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}]}, 400, "FP32"),
        ({"inputs": [{"name": "z", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, 400, "'z'"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}]}, 400, "x"),
        ({"inputs": []}, 400, "inputs"),
        ({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]}, 400, "rank"),
        (
            {
                "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
                "outputs": [{"name": "nope"}],
            },
            400,
            "nope",
        ),
    ],
)
def test_bad_tensors_are_400_with_a_message(app: TestClient, body: object, status: int, needle: str) -> None:
    r = infer(app, "affine", body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


def test_missing_input_and_invalid_json(app: TestClient) -> None:
    body = {"inputs": [{"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    r = infer(app, "multi", body)
    assert r.status_code == 400 and "missing input" in r.json()["error"] and "'b'" in r.json()["error"]
    r = app.post("/v2/models/affine/infer", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]


def test_unknown_model_or_version_is_404(app: TestClient) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    assert infer(app, "nope", body).status_code == 404
    r = infer(app, "affine", body, "7")
    assert r.status_code == 404 and "no version 7" in r.json()["error"]
    assert infer(app, "affine", body, "canary").status_code == 404


def test_body_over_limit_is_413(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conftest import as_admin, make_settings
    from stratus.api import create_app

    with TestClient(create_app(make_settings(tmp_path / "h", max_request_bytes=4096))) as c:
        as_admin(c)
        c.post("/api/v1/models/affine/versions", files={"file": ("m.onnx", affine_model())})
        data = np.ones((1000, 3)).ravel().tolist()
        r = infer(c, "affine", {"inputs": [{"name": "x", "shape": [1000, 3], "datatype": "FP32", "data": data}]})
        assert r.status_code == 413 and "limit" in r.json()["error"]

        def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(10):
                yield b" " * 1000

        r = c.post("/v2/models/affine/infer", content=chunks())
        assert r.status_code == 413


def test_unhealthy_version_is_not_served(app: TestClient) -> None:
    platform = app.app.state.platform  # type: ignore[attr-defined]
    affine_digest = platform.registry.get_version("affine", 1).digest
    blob = platform.artifacts.root / "sha256" / affine_digest[7:9] / affine_digest[7:]
    blob.write_bytes(blob.read_bytes() + b"tampered")
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    r = infer(app, "affine", body)
    assert r.status_code == 503 and "altered" in r.json()["error"]
    assert app.get("/v2/models/affine/ready").status_code == 503
    assert app.get("/api/v1/models/affine/versions/1").json()["health"] == "unhealthy"
    r = infer(app, "affine", body)
    assert r.status_code == 503 and "unhealthy" in r.json()["error"]


def test_deleted_or_archived_versions_are_unloaded(app: TestClient) -> None:
    platform = app.app.state.platform  # type: ignore[attr-defined]
    app.post("/api/v1/models/affine/versions", files={"file": ("m.onnx", affine_model(scale=3.0))})
    for version in ("1", "2"):
        assert (
            app.post("/v2/repository/models/affine/load", json={"parameters": {"version": version}}).status_code == 200
        )
    assert sorted(m.version for m in platform.dataplane.pool.loaded() if m.name == "affine") == [1, 2]
    app.patch("/api/v1/models/affine/versions/1", json={"status": "archived"})
    assert sorted(m.version for m in platform.dataplane.pool.loaded() if m.name == "affine") == [2]
    app.delete("/api/v1/models/affine")
    assert [m for m in platform.dataplane.pool.loaded() if m.name == "affine"] == []
