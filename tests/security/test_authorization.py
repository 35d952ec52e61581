"""The authorization matrix: every route from the OpenAPI schema against every scope, no key, a revoked key
and another project's key. Requests that pass the check aim at resources that do not exist or carry an empty
body, so the matrix changes nothing it later depends on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import as_admin, bearer, make_settings, scaled
from grpc_helpers import serve_grpc
from onnx_factory import affine_model
from stratus.api import create_app
from stratus.api.auth import POLICY
from stratus.security.keys import SCOPES, satisfies

AFFINE_ROW = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Project "default" owns model affine, dataset iris-data and a job; project "other" has keys of its own."""
    home = tmp_path_factory.mktemp("authz") / "home"
    app = create_app(make_settings(home))
    grpc_address = serve_grpc(app)  # the same platform over gRPC, for test_grpc_calls_follow_the_same_matrix
    with TestClient(app) as admin:
        as_admin(admin)
        assert (
            admin.post("/api/v1/models/affine/versions", files={"file": ("a.onnx", affine_model())}).status_code == 201
        )
        assert admin.put("/api/v1/models/affine/aliases/production", json={"version": 1}).status_code == 200
        r = admin.post("/api/v1/datasets/builtin", json={"builtin": "iris", "name": "iris-data"})
        assert r.status_code == 201, r.text
        job = admin.post("/api/v1/jobs", json={"dataset": "iris-data", "model": "logistic_regression"}).json()
        assert admin.post("/api/v1/projects", json={"name": "other"}).status_code == 201
        # An alert rule named like the model, so "other" aims at a real rule of ours under /api/v1/alerts/{name}.
        rule = {"name": "affine", "target": "affine", "metric": "p99_ms", "threshold": 100.0}
        assert admin.post("/api/v1/alerts", json=rule).status_code == 201
        keys = {scope: admin.post("/api/v1/keys", json={"scopes": [scope]}).json() for scope in SCOPES}
        # A device's key (scope edge, off the ladder) comes only from enrollment with a one-time token.
        token = admin.post("/api/v1/device-tokens", json={}).json()["token"]
        keys["edge"] = admin.post("/api/v1/device/enroll", json={"token": token, "name": "matrix"}).json()
        # A federation client's key (scope federated, off the ladder) comes only from its job (docs/federated.md).
        federated = {"model": "mlp", "features": 4, "classes": ["a", "b"], "timeout_s": 60}
        fed_job = admin.post("/api/v1/federated/jobs", json=federated).json()
        keys["federated"] = admin.post(f"/api/v1/federated/jobs/{fed_job['id']}/keys").json()
        other = admin.post("/api/v1/keys", json={"scopes": ["manage"], "project": "other"}).json()
        revoked = admin.post("/api/v1/keys", json={"scopes": ["admin"]}).json()
        assert admin.delete(f"/api/v1/keys/{revoked['id']}").status_code == 200
        yield {"client": admin, "keys": keys, "other": other, "revoked": revoked, "job": job["id"]} | {
            "grpc": grpc_address
        }


def _operations(client: TestClient) -> list[tuple[str, str, str]]:
    spec = client.get("/openapi.json").json()
    return [
        (method.upper(), path, op.get("x-required-scope", ""))
        for path, item in spec["paths"].items()
        for method, op in item.items()
    ]


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


MISSING = {
    "name": "ghost",
    "version": "1",
    "alias": "staging",
    "file": "evaluation.json",
    "job_id": "0" * 32,
    "model": "ghost",
    "key_id": "000000000000",
    "project": "ghost",
    "device_id": "0" * 16,
}


def _call(client: TestClient, method: str, url: str, headers: dict[str, str]) -> int:
    """The request with an empty body, except inference, which gets a valid row so that only the model's
    existence decides the answer."""
    kwargs: dict[str, Any] = {"headers": {"Authorization": "", **headers}}
    if url.endswith("/infer"):
        kwargs["json"] = AFFINE_ROW
    elif url.endswith(":predict"):
        kwargs["json"] = {"instances": [[1, 2, 3]]}
    elif "/aliases/" in url and method == "PUT":
        kwargs["json"] = {"version": 1}
    elif url.endswith("/logging") and method == "PUT":
        kwargs["json"] = {"mode": "off"}
    elif method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return client.request(method, url, **kwargs).status_code


def test_every_route_declares_a_scope(world: dict[str, Any]) -> None:
    operations = _operations(world["client"])
    assert len(operations) >= 50
    undeclared = [(m, p) for m, p, scope in operations if scope not in {"public", "edge", "federated", *SCOPES}]
    assert undeclared == []
    assert {(m, p) for m, p, _ in operations} | {("GET", "/openapi.json")} == set(POLICY)
    public = sorted(p for _, p, scope in operations if scope == "public")
    edge = ["/.well-known/stratus-edge-key", "/api/v1/device/enroll"]  # a key, and a one-time token's own check
    assert public == [*edge, "/v2/health/live", "/v2/health/ready"]


def test_matrix_of_scopes_no_key_and_revoked_key(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    checked = 0
    for method, path, required in _operations(client):
        url = _fill(path, MISSING)
        if required == "public":
            assert _call(client, method, url, {}) == (422 if path == "/api/v1/device/enroll" else 200)
            continue
        no_key = _call(client, method, url, {})
        assert no_key == 401, (method, path, no_key)
        assert _call(client, method, url, bearer("stk_000000000000_" + "x" * 43)) == 401, (method, path)
        assert _call(client, method, url, bearer(world["revoked"]["key"])) == 401, (method, path)
        for scope, key in world["keys"].items():
            status = _call(client, method, url, bearer(key["key"]))
            if satisfies(frozenset({scope}), required):
                assert status not in (401, 403), (method, path, scope, status)
            else:
                assert status == 403, (method, path, scope, status)
            checked += 1
    assert checked >= 50 * len(SCOPES)


def test_another_projects_key_gets_404_on_every_resource(world: dict[str, Any]) -> None:
    """A manage key of project "other" aims at project default's real model, dataset and job: all 404."""
    client: TestClient = world["client"]
    existing = {**MISSING, "name": "affine", "model": "affine", "alias": "production", "job_id": world["job"]}
    other = bearer(world["other"]["key"])
    resource_params = {"name", "model", "job_id"}
    checked = 0
    for method, path, required in _operations(client):
        params = set(re.findall(r"\{(\w+)\}", path))
        # Off-ladder routes (a federated key's join) refuse a manage key by scope (403) before any lookup.
        if required in ("public", "admin", "federated") or not params & resource_params:
            continue
        if (method, path) == ("POST", "/api/v1/models/{name}/versions"):
            continue  # creates the model in the caller's own project (test_same_names_in_two_projects_stay_apart)
        url = _fill(path, existing)
        if path.startswith("/api/v1/datasets/"):
            url = _fill(path, {"name": "iris-data"})
        status = _call(client, method, url, other)
        assert status == 404, (method, path, status)
        checked += 1
    assert checked >= 30
    # Lists show nothing of the other project, and inference cannot reach its models.
    assert client.get("/api/v1/models", headers=other).json()["models"] == []
    assert client.get("/api/v1/datasets", headers=other).json()["datasets"] == []
    assert client.get("/api/v1/jobs", headers=other).json()["jobs"] == []
    assert client.get("/api/v1/alerts", headers=other).json()["alerts"] == []
    assert client.get("/api/v1/alert-history", headers=other, params={"name": "affine"}).status_code == 404
    assert client.post("/v2/repository/index", headers=other, json={}).json() == []
    assert client.post("/v2/models/affine/infer", headers=other, json=AFFINE_ROW).status_code == 404
    # The owner still sees and serves everything.
    assert client.post("/v2/models/affine/infer", json=AFFINE_ROW).status_code == 200


def test_same_names_in_two_projects_stay_apart(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    other = bearer(world["other"]["key"])
    r = client.post(
        "/api/v1/models/affine/versions", headers=other, files={"file": ("a.onnx", affine_model(scale=10.0))}
    )
    assert r.status_code == 201, r.text
    theirs = client.post("/v2/models/affine/infer", headers=other, json=AFFINE_ROW).json()["outputs"][0]["data"]
    ours = client.post("/v2/models/affine/infer", json=AFFINE_ROW).json()["outputs"][0]["data"]
    assert theirs != ours
    assert client.delete("/api/v1/models/affine", headers=other).status_code == 204
    assert client.get("/api/v1/models/affine").status_code == 200


def test_predict_key_infers_but_cannot_change_anything(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    predict = bearer(world["keys"]["predict"]["key"])
    assert client.post("/v2/models/affine/infer", headers=predict, json=AFFINE_ROW).status_code == 200
    r = client.post("/api/v1/models/new/versions", headers=predict, files={"file": ("a.onnx", affine_model())})
    assert r.status_code == 403 and "needs 'manage'" in r.json()["error"]
    assert client.delete("/api/v1/models/affine", headers=predict).status_code == 403
    assert client.get("/api/v1/models/affine/versions/1/artifact", headers=predict).status_code == 403


def test_unauthenticated_requests_get_401_in_each_protocols_shape(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    no_key = {"Authorization": ""}
    r = client.post("/v2/models/affine/infer", headers=no_key, json=AFFINE_ROW)
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]
    r = client.post("/openai/v1/embeddings", headers=no_key, json={"model": "m", "input": "x"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = client.post("/v2/models/affine/infer", headers={"Authorization": "Basic dXNlcjpwYXNz"}, json=AFFINE_ROW)
    assert r.status_code == 401
    assert client.get("/v2/health/ready", headers=no_key).status_code == 200


def test_revocation_takes_effect_at_once_in_process(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    key = client.post("/api/v1/keys", json={"scopes": ["predict"]}).json()
    assert client.post("/v2/models/affine/infer", headers=bearer(key["key"]), json=AFFINE_ROW).status_code == 200
    assert client.delete(f"/api/v1/keys/{key['id']}").status_code == 200
    r = client.post("/v2/models/affine/infer", headers=bearer(key["key"]), json=AFFINE_ROW)
    assert r.status_code == 401 and "revoked" in r.json()["error"]


def test_expired_key_is_refused(tmp_path: Path, database_url: str) -> None:
    from datetime import timedelta

    from stratus.store.tables import ApiKey, utcnow

    settings = make_settings(tmp_path / "home", key_cache_seconds=0, database_url=database_url)
    with TestClient(create_app(settings)) as client:
        as_admin(client)
        key = client.post("/api/v1/keys", json={"scopes": ["read"], "expires_in_days": 1}).json()
        assert client.get("/api/v1/models", headers=bearer(key["key"])).status_code == 200
        platform = client.app.state.platform  # type: ignore[attr-defined]
        with platform.db.write() as s:
            s.get(ApiKey, key["id"]).expires_at = utcnow() - timedelta(seconds=1)
        r = client.get("/api/v1/models", headers=bearer(key["key"]))
        assert r.status_code == 401 and "expired" in r.json()["error"]


def test_key_secrets_are_stored_only_as_hmac(world: dict[str, Any]) -> None:
    from sqlalchemy import select

    from stratus.store.tables import ApiKey

    platform = world["client"].app.state.platform
    key = world["keys"]["read"]["key"]
    secret = key.split("_", 2)[2]
    with platform.db.read() as s:
        stored = s.scalar(select(ApiKey.secret_hash).where(ApiKey.id == world["keys"]["read"]["id"]))
    assert stored is not None and secret not in stored and len(stored) == 64
    db_bytes = Path(platform.settings.resolved_database_url.removeprefix("sqlite:///")).read_bytes()
    assert secret.encode() not in db_bytes
    listed = world["client"].get("/api/v1/keys").json()["keys"]
    assert all("key" not in k and "secret_hash" not in k for k in listed)


def test_audit_log_records_changes_with_who_and_result(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    predict = world["keys"]["predict"]
    client.delete("/api/v1/models/affine", headers=bearer(predict["key"]))  # refused: 403
    client.patch("/api/v1/models/affine", json={"description": "audited"})
    events = client.get("/api/v1/audit", params={"limit": 50}).json()["events"]
    refused = next(e for e in events if e["key_id"] == predict["id"] and e["action"] == "DELETE /api/v1/models/{name}")
    assert refused["status"] == 403 and refused["target"] == "/api/v1/models/affine" and refused["address"]
    changed = next(e for e in events if e["action"] == "PATCH /api/v1/models/{name}")
    assert changed["status"] == 200 and changed["project"] == "default"
    assert client.get("/api/v1/audit", headers=bearer(world["keys"]["manage"]["key"])).status_code == 403


def test_downloads_need_manage_and_can_be_disabled(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    manage = bearer(world["keys"]["manage"]["key"])
    assert client.get("/api/v1/models/affine/versions/1/artifact", headers=manage).status_code == 200
    assert client.patch("/api/v1/models/affine", headers=manage, json={"allow_download": False}).status_code == 200
    r = client.get("/api/v1/models/affine/versions/1/artifact", headers=manage)
    assert r.status_code == 403 and "disabled" in r.json()["error"]
    assert client.post("/v2/models/affine/infer", json=AFFINE_ROW).status_code == 200
    assert client.patch("/api/v1/models/affine", json={"allow_download": True}).status_code == 200


def test_no_response_reveals_a_server_path(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    home = str(client.app.state.platform.settings.home)  # type: ignore[attr-defined]
    bodies = [
        client.get("/api/v1/models/affine").text,
        client.get("/api/v1/models/affine/versions/1").text,
        client.get("/api/v1/datasets/iris-data").text,
        client.get(f"/api/v1/jobs/{world['job']}").text,
        client.get("/v2/models/affine").text,
        client.post("/v2/repository/index", json={}).text,
        client.get("/api/v1/audit").text,
    ]
    assert all(home not in body and "/sha256/" not in body for body in bodies)


def test_grpc_calls_follow_the_same_matrix(world: dict[str, Any]) -> None:
    """Every call of the gRPC service against every scope, no key, an unknown and a revoked key: the scope of
    its HTTP route decides (stratus.grpc.service.POLICY), PERMISSION_DENIED and UNAUTHENTICATED for 403 and 401.
    Calls that pass aim at a model that does not exist; another project's key cannot reach ours."""
    import grpc

    from stratus.grpc import inference_pb2 as pb
    from stratus.grpc.inference_pb2_grpc import GRPCInferenceServiceStub
    from stratus.grpc.service import POLICY as GRPC_POLICY

    requests = {
        "ServerLive": pb.ServerLiveRequest(),
        "ServerReady": pb.ServerReadyRequest(),
        "ModelReady": pb.ModelReadyRequest(name="ghost"),
        "ServerMetadata": pb.ServerMetadataRequest(),
        "ModelMetadata": pb.ModelMetadataRequest(name="ghost"),
        "ModelInfer": pb.ModelInferRequest(
            model_name="ghost",
            inputs=[{"name": "x", "datatype": "FP32", "shape": [1, 3]}],
            raw_input_contents=[b"\0" * 12],
        ),
        "RepositoryIndex": pb.RepositoryIndexRequest(),
        "RepositoryModelLoad": pb.RepositoryModelLoadRequest(model_name="ghost"),
        "RepositoryModelUnload": pb.RepositoryModelUnloadRequest(model_name="ghost"),
    }
    assert set(requests) == set(GRPC_POLICY)
    with grpc.insecure_channel(world["grpc"]) as channel:
        stub = GRPCInferenceServiceStub(channel)

        def code(method: str, key: str | None, request: Any = None) -> grpc.StatusCode:
            auth = () if key is None else (("authorization", f"Bearer {key}"),)
            try:
                getattr(stub, method)(request or requests[method], metadata=auth, timeout=scaled(30))
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        for method, required in GRPC_POLICY.items():
            if required == "public":
                assert code(method, None) == grpc.StatusCode.OK, method
                continue
            for key in (None, "stk_000000000000_" + "x" * 43, world["revoked"]["key"]):
                assert code(method, key) == grpc.StatusCode.UNAUTHENTICATED, (method, key)
            for scope, key in world["keys"].items():
                status = code(method, key["key"])
                if satisfies(frozenset({scope}), required):
                    assert status in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), (method, scope, status)
                else:
                    assert status == grpc.StatusCode.PERMISSION_DENIED, (method, scope, status)
        other = world["other"]["key"]
        row = pb.ModelInferRequest(model_name="affine", raw_input_contents=[b"\0" * 12])
        row.inputs.add(name="x", datatype="FP32", shape=[1, 3])
        assert code("ModelInfer", other, row) == grpc.StatusCode.NOT_FOUND
        assert code("ModelInfer", world["keys"]["predict"]["key"], row) == grpc.StatusCode.OK
        assert code("ModelMetadata", other, pb.ModelMetadataRequest(name="affine")) == grpc.StatusCode.NOT_FOUND
        assert code("RepositoryModelUnload", other, pb.RepositoryModelUnloadRequest(model_name="affine")) == (
            grpc.StatusCode.NOT_FOUND
        )


def test_log_settings_need_manage_and_logs_stay_in_their_project(world: dict[str, Any]) -> None:
    """A read key sees a log setting but cannot change it (403) nor read the log, which holds payloads; a key of
    another project finds neither the setting, the log nor the metrics series of our model (404)."""
    client: TestClient = world["client"]
    read, other = bearer(world["keys"]["read"]["key"]), bearer(world["other"]["key"])
    setting = {"mode": "all", "payloads": True}
    assert client.put("/api/v1/models/affine/logging", headers=read, json=setting).status_code == 403
    assert client.delete("/api/v1/models/affine/logging", headers=read).status_code == 403
    assert client.get("/api/v1/models/affine/logging", headers=read).json()["mode"] == "off"
    assert client.get("/api/v1/models/affine/log", headers=read).status_code == 403
    assert client.put("/api/v1/models/affine/logging", json=setting).status_code == 200
    assert client.post("/v2/models/affine/infer", json=AFFINE_ROW).status_code == 200
    [record] = client.get("/api/v1/models/affine/log", params={"limit": 1}).json()["records"]
    assert record["inputs"]["x"]["data"] == [1.0, 2.0, 3.0]
    for method, path in (
        ("GET", "/api/v1/models/affine/log"),
        ("GET", "/api/v1/models/affine/log?format=jsonl"),
        ("GET", "/api/v1/models/affine/logging"),
        ("PUT", "/api/v1/models/affine/logging"),
        ("DELETE", "/api/v1/models/affine/logging"),
        ("GET", "/api/v1/metrics/series?name=affine&metric=requests_per_s"),
    ):
        assert _call(client, method, path, other) == 404, (method, path)
    # The other project's PUT and DELETE above changed nothing of ours.
    assert client.get("/api/v1/models/affine/logging").json()["mode"] == "all"


def test_drift_and_references_stay_in_their_project(world: dict[str, Any]) -> None:
    """Drift of our model, with a reference and logged inputs: a read key reads it but cannot replace the
    reference (403); a key of another project finds neither the report, its history nor the reference, and
    its upload changes nothing (404)."""
    client: TestClient = world["client"]
    read, other = bearer(world["keys"]["read"]["key"]), bearer(world["other"]["key"])
    rows = [[i % 7, (i * 3) % 11, i % 5 + 0.5 * i] for i in range(40)]
    csv = ("a,b,c\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n").encode()
    upload = {"file": ("reference.csv", csv)}
    r = client.put("/api/v1/models/affine/versions/1/reference", files=upload)
    assert r.status_code == 200 and r.json()["rows"] == 40, r.text
    assert client.put("/api/v1/models/affine/logging", json={"mode": "all", "payloads": True}).status_code == 200
    body = {"inputs": [{"name": "x", "shape": [40, 3], "datatype": "FP32", "data": [v for r in rows for v in r]}]}
    assert client.post("/v2/models/affine/infer", json=body).status_code == 200
    mine = client.get("/api/v1/models/affine/drift", headers=read, params={"last": 40})
    assert mine.status_code == 200 and mine.json()["features_tested"] == 3, mine.text
    assert client.put("/api/v1/models/affine/versions/1/reference", headers=read, files=upload).status_code == 403
    for path in (
        "/api/v1/models/affine/drift",
        "/api/v1/models/affine/drift/history",
        "/api/v1/models/affine/versions/1/reference",
    ):
        assert client.get(path, headers=other).status_code == 404, path
    other_rows = {"file": ("reference.csv", b"a,b,c\n1,2,3\n4,5,6\n")}
    assert client.put("/api/v1/models/affine/versions/1/reference", headers=other, files=other_rows).status_code == 404
    assert client.get("/api/v1/models/affine/versions/1/reference").json()["rows"] == 40
    assert client.get("/api/v1/models/affine/drift/history").json()["points"][-1]["window_rows"] == 40
