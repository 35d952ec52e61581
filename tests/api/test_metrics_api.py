from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from onnx_factory import affine_model


def scrape(client: TestClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_parse_and_move(empty_app: TestClient) -> None:
    empty_app.post("/api/v1/models/affine/versions", files={"file": ("m.onnx", affine_model())})
    body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}
    before = scrape(empty_app)
    assert before["stratus_models_loaded"][()] == 0
    for _ in range(3):
        assert empty_app.post("/v2/models/affine/infer", json=body).status_code == 200
    assert empty_app.post("/v1/models/affine:predict", json={"instances": [[1, 2, 3]]}).status_code == 200
    bad = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    assert empty_app.post("/v2/models/affine/infer", json=bad).status_code == 400
    assert empty_app.post("/v2/models/no-such/infer", json=body).status_code == 404
    after = scrape(empty_app)
    v2 = (("model", "affine"), ("protocol", "v2"), ("version", "1"))
    v1 = (("model", "affine"), ("protocol", "v1"), ("version", "1"))
    assert after["stratus_inference_requests_total"][v2] == 3
    assert after["stratus_inference_requests_total"][v1] == 1
    assert after["stratus_inference_request_duration_seconds_count"][v2] == 3
    failures = after["stratus_inference_failures_total"]
    assert failures[(("code", "invalid_input"), *v2[:1], ("protocol", "v2"), ("version", "1"))] == 1
    assert failures[(("code", "not_found"), ("model", "(unresolved)"), ("protocol", "v2"), ("version", ""))] == 1
    per_version = (("model", "affine"), ("version", "1"))
    assert after["stratus_inference_batch_size_count"][per_version] == 4
    assert after["stratus_inference_batch_size_sum"][per_version] == 7  # 3 requests x 2 rows + 1 row
    assert after["stratus_inference_queue_duration_seconds_count"][per_version] == 4
    assert after["stratus_inference_compute_duration_seconds_count"][per_version] == 4
    assert after["stratus_models_loaded"][()] == 1
    assert after["stratus_model_memory_bytes"][per_version] == len(affine_model())
    assert after["stratus_inference_queue_depth"][per_version] == 0
