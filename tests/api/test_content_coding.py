"""gzip/deflate request bodies and responses, repeated framing headers, Triton's model config (in process)."""

from __future__ import annotations

import gzip
import zlib

import orjson
from fastapi.testclient import TestClient

from stratus.api.encoding import response_coding

IRIS = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2] * 2}]}


def test_gzip_and_deflate_bodies_give_the_plain_answer(sample_app: TestClient) -> None:
    raw = orjson.dumps(IRIS)
    plain = sample_app.post("/v2/models/iris/infer", content=raw, headers={"Content-Type": "application/json"})
    assert plain.status_code == 200
    for coding, packed in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw)), ("identity", raw)):
        r = sample_app.post(
            "/v2/models/iris/infer",
            content=packed,
            headers={"Content-Type": "application/json", "Content-Encoding": coding},
        )
        assert r.status_code == 200, (coding, r.text)
        assert r.json()["outputs"] == plain.json()["outputs"]
    # The router path (not the fast lane) sees the inflated body too.
    r = sample_app.post(
        "/v2/repository/index",
        content=gzip.compress(b'{"ready": false}'),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200 and any(row["name"] == "iris" for row in r.json())


def test_bad_compressed_bodies_are_4xx(sample_app: TestClient) -> None:
    raw = orjson.dumps(IRIS)
    cases = [
        ("gzip", b"not gzip at all", 400),
        ("gzip", gzip.compress(raw)[:-12], 400),  # truncated
        ("gzip", gzip.compress(raw) + b"junk", 400),  # data after the stream
        ("deflate", gzip.compress(raw), 400),  # gzip sent as deflate
        ("br", raw, 415),
    ]
    for coding, body, status in cases:
        r = sample_app.post("/v2/models/iris/infer", content=body, headers={"Content-Encoding": coding})
        assert r.status_code == status, (coding, r.status_code, r.text)
        assert r.json()["error"]


def test_a_gzip_bomb_is_refused_by_its_inflated_size(sample_app: TestClient) -> None:
    limit = sample_app.app.state.platform.settings.max_request_bytes  # type: ignore[attr-defined]
    # About 1 MB of gzip that inflates far past the limit (zeros compress about 1000:1).
    bomb = gzip.compress(b"\0" * (limit + 64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 1.5 * 1024 * 1024
    r = sample_app.post("/v2/models/iris/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413, r.text
    r = sample_app.post("/v2/repository/index", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413, r.text


def test_responses_are_compressed_for_clients_that_ask(sample_app: TestClient) -> None:
    body = {"inputs": [{"name": "input", "shape": [150, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2] * 150}]}
    plain = sample_app.post("/v2/models/iris/infer", json=body, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    for coding in ("gzip", "deflate"):
        r = sample_app.post("/v2/models/iris/infer", json=body, headers={"Accept-Encoding": coding})
        assert r.status_code == 200
        assert r.headers["content-encoding"] == coding and "Accept-Encoding" in r.headers["vary"]
        assert int(r.headers["content-length"]) < len(plain.content)
        assert r.json() == plain.json()  # httpx inflates it
    small = sample_app.get("/v2/models/iris", headers={"Accept-Encoding": "gzip"})
    assert small.status_code == 200 and "content-encoding" not in small.headers


def test_accept_encoding_parsing() -> None:
    assert response_coding(b"gzip") == "gzip"
    assert response_coding(b"deflate, gzip;q=0") == "deflate"
    assert response_coding(b"br, deflate;q=0.5, gzip;q=0.1") == "gzip"
    assert response_coding(b"identity") is None
    assert response_coding(b"gzip;q=nonsense") is None


def test_repeated_framing_headers_are_refused(sample_app: TestClient) -> None:
    raw = orjson.dumps(IRIS)
    for name, values in (
        ("host", ["testserver", "evil.example"]),
        ("host", ["testserver", "testserver"]),
        ("content-type", ["application/json", "application/octet-stream"]),
        ("content-encoding", ["identity", "identity"]),
    ):
        headers = [(name.encode(), v.encode()) for v in values]
        r = sample_app.post("/v2/models/iris/infer", content=raw, headers=headers)
        assert r.status_code == 400, (name, r.status_code, r.text)
        assert name in r.json()["error"]
    assert sample_app.post("/v2/models/iris/infer", content=raw).status_code == 200


def test_triton_model_config(sample_app: TestClient) -> None:
    config = sample_app.get("/v2/models/iris/config").json()
    assert config["name"] == "iris" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] > 0
    assert config["input"][0] | {"format": None} == {
        "name": "input",
        "data_type": "TYPE_FP32",
        "dims": [4],
        "format": None,
        "is_shape_tensor": False,
        "allow_ragged_batch": False,
        "optional": False,
    }
    outputs = {o["name"]: o for o in config["output"]}
    assert outputs["probabilities"]["dims"] == [3]
    assert outputs["label"]["dims"] == [1] and outputs["label"]["reshape"] == {"shape": []}
    assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] > 0
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    digits = sample_app.get("/v2/models/digits/versions/1/config").json()
    assert digits["input"][0]["dims"] == [1, 8, 8]
    assert digits["version_policy"] == {"specific": {"versions": [1]}}
    assert sample_app.get("/v2/models/no-such/config").status_code == 404
    assert "model_configuration" in sample_app.get("/v2").json()["extensions"]
