"""The endpoints API in-process: validation, errors, and one endpoint's life with a real replica."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from conftest import scaled

IRIS = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


def _wait_ready(client: TestClient, name: str, revision: int) -> dict[str, object]:
    deadline = time.monotonic() + scaled(60)
    while time.monotonic() < deadline:
        endpoint = client.get(f"/api/v1/endpoints/{name}").json()
        if endpoint["revision"] == revision and endpoint["state"] == "ready":
            return endpoint  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"endpoint {name} revision {revision} did not go live")


def test_invalid_specs_are_400_with_the_field(sample_app: TestClient) -> None:
    r = sample_app.post(
        "/api/v1/endpoints", json={"name": "bad", "targets": [{"model": "iris"}], "scaling": {"max_replicas": 99}}
    )
    assert r.status_code == 400 and "scaling.max_replicas" in r.json()["error"]
    r = sample_app.post("/api/v1/endpoints", json={"targets": [{"model": "iris"}]})
    assert r.status_code == 400 and "needs a 'name'" in r.json()["error"]
    r = sample_app.post("/api/v1/endpoints", json={"name": "Bad Name", "targets": [{"model": "iris"}]})
    assert r.status_code == 400 and "invalid endpoint name" in r.json()["error"]
    r = sample_app.post("/api/v1/endpoints", content=b"[1]", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON object" in r.json()["error"]
    r = sample_app.post("/api/v1/endpoints", json={"name": "x", "targets": [{"model": "iris", "version": "nope"}]})
    assert r.status_code == 404 and "alias 'nope'" in r.json()["error"]


def test_unknown_endpoints_are_404_everywhere(sample_app: TestClient) -> None:
    for method, path in [
        ("GET", "/api/v1/endpoints/ghost"),
        ("PUT", "/api/v1/endpoints/ghost"),
        ("DELETE", "/api/v1/endpoints/ghost"),
        ("POST", "/api/v1/endpoints/ghost/rollback"),
        ("GET", "/api/v1/endpoints/ghost/revisions"),
        ("GET", "/api/v1/endpoints/ghost/events"),
        ("GET", "/api/v1/endpoints/ghost/export/k8s"),
        ("POST", "/v2/models/ghost/infer"),
    ]:
        body = IRIS if path.endswith("infer") else {"targets": [{"model": "iris"}]}
        r = sample_app.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)


def test_an_endpoint_in_process_routes_to_a_replica_and_back(sample_app: TestClient) -> None:
    r = sample_app.post(
        "/api/v1/endpoints", json={"name": "inproc", "targets": [{"model": "iris", "version": "latest"}]}
    )
    assert r.status_code == 201
    assert r.json()["spec"]["targets"][0] == {"model": "iris", "version": 1, "weight": 100, "requested": "latest"}
    endpoint = _wait_ready(sample_app, "inproc", 1)
    replica = endpoint["live"]["targets"][0]["replicas"][0]  # type: ignore[index]
    assert replica["state"] == "ready" and replica["url"].startswith("http://127.0.0.1:")
    served = sample_app.post("/v2/models/inproc/infer", json=IRIS)
    direct = sample_app.post("/v2/models/iris/infer", json=IRIS)
    assert served.status_code == 200 and served.json()["model_version"] == "1"
    assert served.json()["outputs"] == direct.json()["outputs"]
    # Bad input is the caller's: the replica's 400 comes back as a 400 with its message.
    wrong = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    r = sample_app.post("/v2/models/inproc/infer", json=wrong)
    assert r.status_code == 400 and "shape" in r.json()["error"]
    k8s = sample_app.get("/api/v1/endpoints/inproc/export/k8s?image=img:1&namespace=team-a")
    assert k8s.status_code == 200 and "namespace: team-a" in k8s.text and "image: img:1" in k8s.text
    assert sample_app.get("/api/v1/endpoints/inproc/export/k8s?namespace=../x").status_code == 400
    assert sample_app.delete("/api/v1/endpoints/inproc").status_code == 204
    assert sample_app.post("/v2/models/inproc/infer", json=IRIS).status_code == 404
