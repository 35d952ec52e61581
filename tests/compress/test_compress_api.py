"""POST /api/v1/models/{name}/versions/{version}/compress: what is refused at submit time, and why."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from onnx_factory import affine_model, two_input_model

URL = "/api/v1/models/{}/versions/{}/compress"


@pytest.fixture(scope="module")
def app(sample_app: TestClient) -> TestClient:
    for name, model in (("uploaded", affine_model()), ("two-inputs", two_input_model())):
        r = sample_app.post(f"/api/v1/models/{name}/versions", files={"file": ("m.onnx", model)})
        assert r.status_code == 201, r.text
    return sample_app


@pytest.mark.parametrize(
    ("model", "body", "status", "message"),
    [
        ("uploaded", {"methods": ["quantize-static"]}, 400, "records no dataset"),
        ("uploaded", {"methods": ["prune"]}, 400, "needs the version's training data"),
        ("iris", {"methods": ["prune"]}, 400, "needs a training graph"),
        ("iris", {"methods": ["distill"]}, 400, "from the teacher's training graph"),
        ("minilm", {"methods": ["quantize-static"]}, 400, "is a pipeline"),
        ("two-inputs", {"methods": ["fp16"]}, 400, "one input tensor"),
        ("iris", {"methods": ["shrink"]}, 400, "unknown compression method"),
        ("iris", {"methods": ["fp16"], "accuracy_budget": 2}, 400, "accuracy_budget"),
        ("iris", {"methods": ["fp16"], "promote_alias": "123"}, 400, "cannot be all digits"),
        ("iris", {"methods": ["fp16"], "params": {"fp16": {"speed": 2}}}, 400, "invalid params for fp16"),
        ("nosuchmodel", {"methods": ["fp16"]}, 404, "does not exist"),
    ],
)
def test_refused_at_submit_with_the_reason(
    app: TestClient, model: str, body: dict[str, object], status: int, message: str
) -> None:
    r = app.post(URL.format(model, 1), json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_an_applicable_request_queues_a_compress_job(app: TestClient) -> None:
    r = app.post(URL.format("digits", "latest"), json={"methods": ["prune", "distill"], "promote_alias": "fast"})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["kind"] == "compress" and job["model"] == "digits"
    assert job["spec"]["methods"] == ["prune", "distill"] and job["spec"]["version"] == 1
    data = {"source": "builtin", "builtin": "digits", "input_scale": 0.0625, "test_split": 0.25, "seed": 0}
    assert job["spec"]["data"] == data
    assert "/" not in str(job["spec"]["data"])  # no server path reaches the client
    cancelled = app.post(f"/api/v1/jobs/{job['id']}/cancel").json()
    assert cancelled["state"] == "cancelled"
