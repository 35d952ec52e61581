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
    # Every series that names a model carries its project.
    v2 = (("model", "affine"), ("project", "default"), ("protocol", "v2"), ("version", "1"))
    v1 = (("model", "affine"), ("project", "default"), ("protocol", "v1"), ("version", "1"))
    assert after["stratus_inference_requests_total"][v2] == 3
    assert after["stratus_inference_requests_total"][v1] == 1
    assert after["stratus_inference_request_duration_seconds_count"][v2] == 3
    failures = after["stratus_inference_failures_total"]
    assert failures[(("code", "invalid_input"), *v2)] == 1
    unresolved = (("model", "(unresolved)"), ("project", "default"), ("protocol", "v2"), ("version", ""))
    assert failures[(("code", "not_found"), *unresolved)] == 1
    per_version = (("model", "affine"), ("project", "default"), ("version", "1"))
    assert after["stratus_inference_batch_size_count"][per_version] == 4
    assert after["stratus_inference_batch_size_sum"][per_version] == 7  # 3 requests x 2 rows + 1 row
    assert after["stratus_inference_queue_duration_seconds_count"][per_version] == 4
    assert after["stratus_inference_compute_duration_seconds_count"][per_version] == 4
    assert after["stratus_models_loaded"][()] == 1
    assert after["stratus_model_memory_bytes"][per_version] == len(affine_model())
    assert after["stratus_inference_queue_depth"][per_version] == 0


def test_a_tenant_sees_only_its_own_series(empty_app: TestClient) -> None:
    """A read key of project A sees none of project B's model or endpoint names; an admin sees both."""
    keys = {}
    for project in ("alpha", "beta"):
        assert empty_app.post("/api/v1/projects", json={"name": project}).status_code == 201
        r = empty_app.post("/api/v1/keys", json={"project": project, "scopes": ["manage"], "name": "m"})
        manage = r.json()["key"]
        r = empty_app.post("/api/v1/keys", json={"project": project, "scopes": ["read"], "name": "r"})
        keys[project] = r.json()["key"]
        as_project = {"Authorization": f"Bearer {manage}"}
        upload = {"file": ("m.onnx", affine_model())}
        r = empty_app.post(f"/api/v1/models/{project}-model/versions", files=upload, headers=as_project)
        assert r.status_code == 201, r.text
        body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
        r = empty_app.post(f"/v2/models/{project}-model/infer", json=body, headers=as_project)
        assert r.status_code == 200
        bad = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
        assert empty_app.post(f"/v2/models/{project}-model/infer", json=bad, headers=as_project).status_code == 400

    def projects_and_models(text: str) -> tuple[set[str], set[str]]:
        projects, models = set(), set()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                projects.add(sample.labels.get("project", "(none)"))
                if "model" in sample.labels:
                    models.add(sample.labels["model"])
        return projects, models

    admin = empty_app.get("/metrics")
    assert projects_and_models(admin.text) == ({"alpha", "beta", "(none)"}, {"alpha-model", "beta-model"})
    for mine, other in (("alpha", "beta"), ("beta", "alpha")):
        r = empty_app.get("/metrics", headers={"Authorization": f"Bearer {keys[mine]}"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert projects_and_models(r.text) == ({mine}, {f"{mine}-model"})
        assert other not in r.text  # not in any label, and no platform-wide total either
        samples = {s.name for f in text_string_to_metric_families(r.text) for s in f.samples}
        assert {"stratus_inference_requests_total", "stratus_inference_failures_total"} <= samples
        assert {"stratus_model_memory_bytes", "stratus_inference_batch_size_count"} <= samples


def test_endpoint_series_carry_their_project_and_are_filtered() -> None:
    """The deployment series (replicas, scaling, restarts, retries, shadows, rollbacks, cold starts) too."""
    from stratus.deploy.metrics import DeployMetrics
    from stratus.runtime.metrics import InferenceMetrics

    metrics = InferenceMetrics()
    deploy = DeployMetrics(metrics.registry)
    deploy.watch(lambda: [("alpha", "ep-a", "m:1", "ready", 2), ("beta", "ep-b", "m:1", "ready", 1)])
    for project in ("alpha", "beta"):
        key = (project, f"ep-{project[0]}")
        deploy.scaled(key, "m:1", "up")
        deploy.cold_started(key, 0.2)
        deploy.restarted(key)
        deploy.retried(key)
        deploy.shadow(key, "m:2", "success")
        deploy.rolled_back(key)
    everything = metrics.render().decode()
    alpha = metrics.render("alpha").decode()
    assert "ep-a" in everything and "ep-b" in everything
    assert "ep-a" in alpha and "ep-b" not in alpha and 'project="beta"' not in alpha
    families = {f.name for f in text_string_to_metric_families(alpha) if f.samples}
    assert families >= {
        "stratus_endpoint_replicas",
        "stratus_endpoint_scale_events",
        "stratus_endpoint_cold_start_seconds",
        "stratus_endpoint_replica_restarts",
        "stratus_endpoint_retries",
        "stratus_endpoint_shadow_requests",
        "stratus_endpoint_rollbacks",
    }
