from __future__ import annotations

import pickle

from fastapi.testclient import TestClient

from onnx_factory import affine_model


def upload(client: TestClient, name: str, data: bytes, filename: str = "model.onnx", **form: str):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/models/{name}/versions", files={"file": (filename, data)}, data=form)


def test_model_lifecycle(empty_app: TestClient) -> None:
    c = empty_app
    r = c.post("/api/v1/models", json={"name": "affine", "description": "y=2x+1", "task": "regression"})
    assert r.status_code == 201, r.text
    assert c.post("/api/v1/models", json={"name": "affine"}).status_code == 409
    r = upload(c, "affine", affine_model(), metrics='{"rmse": 0.5}', description="first")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["version"] == 1
    assert body["digest"].startswith("sha256:")
    assert body["signature"]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert body["metrics"] == {"rmse": 0.5}
    assert "path" not in r.text and "artifacts" not in r.text
    assert upload(c, "affine", affine_model(scale=5.0)).json()["version"] == 2
    r = c.put("/api/v1/models/affine/aliases/production", json={"version": 1})
    assert r.status_code == 200 and r.json()["aliases"] == ["production"]
    assert c.get("/api/v1/models/affine").json()["aliases"] == {"production": 1}
    assert c.get("/api/v1/models/affine/versions/production").json()["version"] == 1
    assert c.patch("/api/v1/models/affine/versions/1", json={"status": "archived"}).status_code == 409
    assert c.patch("/api/v1/models/affine/versions/2", json={"status": "archived"}).json()["status"] == "archived"
    listing = c.get("/api/v1/models").json()["models"]
    assert [m["name"] for m in listing] == ["affine"]
    assert c.delete("/api/v1/models/affine/versions/1").status_code == 409  # alias still points at it
    assert c.delete("/api/v1/models/affine/aliases/production").status_code == 204
    assert c.delete("/api/v1/models/affine/versions/1").status_code == 204
    assert c.get("/api/v1/models/affine/versions/1").status_code == 404
    assert c.delete("/api/v1/models/affine").status_code == 204
    assert c.get("/api/v1/models/affine").status_code == 404


def test_upload_creates_model_and_artifact_downloads_intact(empty_app: TestClient) -> None:
    data = affine_model()
    assert upload(empty_app, "auto", data).status_code == 201
    r = empty_app.get("/api/v1/models/auto/versions/1/artifact")
    assert r.status_code == 200 and r.content == data


def test_bad_uploads_are_refused_clearly_and_store_nothing(empty_app: TestClient) -> None:
    c = empty_app
    r = upload(c, "bad", pickle.dumps({"w": 1}), filename="model.pkl")
    assert r.status_code == 415
    assert "pickle" in r.json()["error"].lower()
    r = upload(c, "bad", b"\x08\x07garbage that is not a protobuf")
    assert r.status_code == 400
    assert "not a valid ONNX model" in r.json()["error"]
    r = upload(c, "Bad Name", affine_model())
    assert r.status_code == 400 and "invalid model name" in r.json()["error"]
    r = upload(c, "m", affine_model(), metrics="[1, 2]")
    assert r.status_code == 400 and "metrics" in r.json()["error"]
    r = upload(c, "m", affine_model(), version="0")
    assert r.status_code == 422
    assert c.get("/api/v1/models").json()["models"] == []
    platform = c.app.state.platform  # type: ignore[attr-defined]
    assert list(platform.artifacts.digests()) == []


def test_upload_over_the_limit_is_413(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conftest import as_admin, make_settings
    from stratus.api import create_app

    settings = make_settings(tmp_path / "home", max_upload_bytes=2048)
    with TestClient(create_app(settings)) as c:
        as_admin(c)
        r = upload(c, "big", b"\x00" * 10_000)
        assert r.status_code == 413
        assert "limit of 2048 bytes" in r.json()["error"]
        assert c.get("/api/v1/models").json()["models"] == []


def test_validation_errors_are_readable(empty_app: TestClient) -> None:
    r = empty_app.post("/api/v1/models", json={"description": "no name"})
    assert r.status_code == 422
    assert "name" in r.json()["error"]
    r = empty_app.put("/api/v1/models/x/aliases/production", json={"version": "one"})
    assert r.status_code == 422
    r = empty_app.post("/api/v1/models", json={"name": "m", "task": "astrology"})
    assert r.status_code == 400 and "invalid task" in r.json()["error"]
    r = empty_app.put("/api/v1/models/m/aliases/123", json={"version": 1})
    assert r.status_code == 400 and "all digits" in r.json()["error"]
    assert empty_app.get("/no/such/route").status_code == 404


def test_openapi_is_served_to_key_holders_with_scopes(empty_app: TestClient) -> None:
    spec = empty_app.get("/openapi.json").json()
    assert "/v2/models/{name}/infer" in spec["paths"]
    assert "/api/v1/models/{name}/versions" in spec["paths"]
    assert spec["paths"]["/v2/models/{name}/infer"]["post"]["x-required-scope"] == "predict"
    assert empty_app.get("/openapi.json", headers={"Authorization": ""}).status_code == 401
    # No interactive docs page: it would load scripts from a CDN and could not send a key.
    assert empty_app.get("/docs").status_code == 404


def test_pipeline_upload_with_its_files(empty_app: TestClient) -> None:
    import json

    from onnx_factory import embedding_lookup_model, word_tokenizer_json

    spec = {
        "kind": "pipeline",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 4]}],
        "steps": [
            {"op": "tokenize", "file": "tokenizer.json", "input": "text"},
            {
                "op": "onnx",
                "file": "encoder.onnx",
                "inputs": {"input_ids": "input_ids"},
                "outputs": {"last_hidden_state": "t"},
            },
            {"op": "mean_pool", "input": "t", "mask": "attention_mask", "output": "p"},
            {"op": "l2_normalize", "input": "p", "output": "embedding"},
        ],
    }
    files = [
        ("file", ("pipeline.json", json.dumps(spec).encode())),
        ("files", ("tokenizer.json", word_tokenizer_json())),
        ("files", ("encoder.onnx", embedding_lookup_model())),
    ]
    r = empty_app.post(
        "/api/v1/models/embedder/versions", files=files, data={"format": "pipeline", "task": "embedding"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "pipeline" and sorted(r.json()["files"]) == ["encoder.onnx", "tokenizer.json"]
    body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["hello world", "stratus"]}]}
    out = empty_app.post("/v2/models/embedder/infer", json=body).json()["outputs"][0]
    assert out["shape"] == [2, 4]
    r = empty_app.post("/openai/v1/embeddings", json={"model": "embedder", "input": "hello"})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 4
    r = empty_app.post("/api/v1/models/other/versions", files=files[:2], data={"format": "pipeline"})
    assert r.status_code == 400 and "missing ['encoder.onnx']" in r.json()["error"]
    r = empty_app.post("/api/v1/models/other/versions", files=files, data={"format": "onnx"})
    assert r.status_code == 400 and "format=pipeline" in r.json()["error"]
