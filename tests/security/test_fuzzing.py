"""Schemathesis with ALL its checks against a real server: the published OpenAPI schema must describe the
server (every status documented, schema-valid requests accepted, schema-violating ones refused, the media
types and the Allow header of 405s as declared), and no request may get a 5xx.

The run covers every operation through the examples, coverage (edge and negative values, undeclared
methods) and fuzzing phases, with the admin key, a bounded number of cases per operation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema

from conftest import LiveServer, scaled, start_server

EXAMPLES_PER_OPERATION = 3
MIN_CASES = 1500
#: positive_data_acceptance ("a schema-valid request is accepted") is off only where JSON Schema cannot state
#: what the server checks; every other check stays on for these operations too.
NOT_STATABLE = {
    ("POST", "/api/v1/models/{name}/versions"): "the uploaded file must be a valid ONNX model or pipeline spec",
    ("POST", "/api/v1/datasets"): "the uploaded file must parse in its data set format",
    ("POST", "/api/v1/endpoints"): "rules across fields: weights add up to more than 0, canary steps rise to 100",
    ("PUT", "/api/v1/endpoints/{name}"): "rules across fields: weights add up to more than 0, canary steps rise to 100",
    ("POST", "/api/v1/alerts"): "a webhook URL must resolve to public addresses (DNS decides)",
    ("PATCH", "/api/v1/alerts/{name}"): "a webhook URL must resolve to public addresses (DNS decides)",
    ("GET", "/api/v1/metrics/series"): "rules across fields: start before end, at most 10,000 steps in between",
    ("POST", "/v2/models/{name}/infer"): "each tensor's data must hold as many values as its shape says",
    ("POST", "/v2/models/{name}/versions/{version}/infer"): "each tensor's data must hold as many values as its shape",
    ("POST", "/v1/models/{name}:predict"): "instances must have the shape of the model's input",
    ("POST", "/v1/models/{name}/versions/{version}:predict"): "instances must have the shape of the model's input",
    ("POST", "/v1/models/{name}:explain"): "the body is a :predict body: instances of the model's input shape",
    ("POST", "/v1/models/{name}/versions/{version}:explain"): "the body is a :predict body of the input's shape",
    ("POST", "/v2/models/{name}/explain"): "the body is an infer body: data as many values as its shape says",
    ("POST", "/v2/models/{name}/versions/{version}/explain"): "the body is an infer body of the input's shape",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("fuzz") / "home", None)
    yield live
    live.stop()


def _config(key: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": 1,
            "workers": 1,
            # Registering a built-in data set loads it in the server once: seconds on a busy machine.
            "request-timeout": scaled(30),
            "headers": {"Authorization": f"Bearer {key}"},
            "generation": {"max-examples": EXAMPLES_PER_OPERATION, "no-shrink": True, "database": "none"},
            # Stateful sequences would train models and start replicas: too slow for the suite's budget.
            "phases": {"stateful": {"enabled": False}},
            "checks": {"enabled": True},
            "operations": [
                # A valid job trains a model (a built-in data set is one valid request away): minutes of CPU
                # the suite has no room for. tests/security/test_edge_values.py and test_schema_bounds.py
                # still cover the operation.
                # An operation is selected by its name: filters of different kinds would match either.
                {"include-name": "POST /api/v1/jobs", "enabled": False},
                # The same for an AutoML job, which searches for its whole budget (tests/automl covers its checks).
                {"include-name": "POST /api/v1/automl", "enabled": False},
                # And a personalization, which fine-tunes MiniLM on a CSV data set of the project (which data set
                # is a CSV the schema cannot say); tests/personalize covers its checks.
                {"include-name": "POST /api/v1/personalize", "enabled": False},
                *(
                    {"include-name": f"{method} {path}", "checks": {"positive_data_acceptance": {"enabled": False}}}
                    for method, path in NOT_STATABLE
                ),
            ],
        }
    )


def test_schemathesis_all_checks_pass(server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    schema = schemathesis.openapi.from_url(
        f"{server.url}/openapi.json", config=_config(server.admin_key), headers=server.headers
    )
    operations = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert set(NOT_STATABLE) <= operations  # no stale exclusion
    assert not {("POST", "/api/v1/jobs"), ("POST", "/api/v1/automl"), ("POST", "/api/v1/personalize")} & operations
    assert len(operations) >= 60
    started = time.monotonic()
    cases, failures, errors = 0, [], []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            cases += len(event.recorder.cases)
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.failure_info is not None:
                        interaction = event.recorder.interactions.get(case_id)
                        answer = interaction.response.content[:200] if interaction and interaction.response else b""
                        failures.append(f"{event.label}: {check.name}: {check.failure_info.failure.title}: {answer!r}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            errors.append(str(event.info)[:500])
    with capsys.disabled():
        print(
            f"\nschemathesis, all checks: {cases} cases over {len(operations)} operations "
            f"in {time.monotonic() - started:.0f} s, {len(failures)} failures"
        )
    assert sorted(set(failures)) == [], "\n".join(sorted(set(failures)))
    assert errors == []
    assert cases >= MIN_CASES


def test_the_schema_states_bearer_security_and_real_media_types(server: LiveServer) -> None:
    schema = server.get(f"{server.url}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"].keys() == {"text/plain"}
    infer = schema["paths"]["/v2/models/{name}/infer"]["post"]
    assert {"application/json", "application/octet-stream"} <= infer["responses"]["200"]["content"].keys()
    assert "security" not in schema["paths"]["/v2/health/live"]["get"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert "500" in operation["responses"], (method, path)
            if operation.get("x-required-scope") != "public":
                assert {"401", "403", "429"} <= operation["responses"].keys(), (method, path)


def test_405_names_every_method_of_the_path(server: LiveServer, tmp_path: Path) -> None:
    with server.client() as client:
        for path, allowed in (
            ("/api/v1/models", "GET, POST"),
            ("/api/v1/datasets/builtin", "POST"),
            ("/v1/models/x:predict", "POST"),
            ("/api/v1/models/x/versions/1", "DELETE, GET, PATCH"),
        ):
            r = client.request("OPTIONS", path)
            assert r.status_code == 405 and r.headers["allow"] == allowed, (path, r.headers, r.text)
        r = client.get("/v1/models/x:predict")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
