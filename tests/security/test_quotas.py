"""Monthly item quotas and project rate limits through the API: 429 with Retry-After and a clear message."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from conftest import as_admin, bearer, make_settings
from onnx_factory import affine_model
from stratus.api import create_app

ROWS = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}


def test_monthly_item_quota_of_a_project(tmp_path: Path, database_url: str) -> None:
    with TestClient(create_app(make_settings(tmp_path / "home", database_url=database_url))) as client:
        as_admin(client)
        assert client.post("/api/v1/projects", json={"name": "small", "monthly_item_quota": 5}).status_code == 201
        manage = bearer(client.post("/api/v1/keys", json={"scopes": ["manage"], "project": "small"}).json()["key"])
        client.post("/api/v1/models/affine/versions", headers=manage, files={"file": ("a.onnx", affine_model())})
        statuses = [client.post("/v2/models/affine/infer", headers=manage, json=ROWS).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]  # 2 + 2 + 2 items: the quota of 5 is used up by the third
        r = client.post("/v1/models/affine:predict", headers=manage, json={"instances": [[1, 2, 3]]})
        assert r.status_code == 429 and "monthly quota of 5" in r.json()["error"]
        assert int(r.headers["Retry-After"]) > 0
        # Control-plane reads still work, and the default project is not affected.
        assert client.get("/api/v1/models", headers=manage).status_code == 200
        client.post("/api/v1/models/affine/versions", files={"file": ("a.onnx", affine_model())})
        assert client.post("/v2/models/affine/infer", json=ROWS).status_code == 200
        # The admin raises the quota: inference resumes at once.
        assert client.patch("/api/v1/projects/small", json={"monthly_item_quota": 100}).status_code == 200
        assert client.post("/v2/models/affine/infer", headers=manage, json=ROWS).status_code == 200


def test_project_rate_limit_is_shared_by_its_keys(tmp_path: Path, database_url: str) -> None:
    with TestClient(create_app(make_settings(tmp_path / "home", database_url=database_url))) as client:
        as_admin(client)
        client.post("/api/v1/projects", json={"name": "slow", "rate_limit_rps": 1})
        keys = [
            bearer(client.post("/api/v1/keys", json={"scopes": ["read"], "project": "slow"}).json()["key"])
            for _ in range(2)
        ]
        statuses = [client.get("/api/v1/models", headers=keys[i % 2]).status_code for i in range(6)]
        assert statuses.count(429) >= 3 and statuses[0] == 200
