"""Every integer a client can send is bounded in the published schema, within the JSON-safe range the edge
enforces: a route or request model that forgets the bounded types of stratus.api.bounds fails here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient

from stratus.api.bounds import JSON_SAFE_MAX


def _request_schemas(schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every schema a request carries: parameters, bodies and the components they refer to."""
    components = schema["components"]["schemas"]
    seen: set[str] = set()

    def walk(where: str, node: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(node, list):
            for item in node:
                yield from walk(where, item)
        elif isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/components/schemas/") and ref not in seen:
                seen.add(ref)
                name = ref.rsplit("/", 1)[-1]
                yield from walk(f"{where} -> {name}", components[name])
            yield where, node
            for key, value in node.items():
                if key not in ("enum", "const", "default", "examples", "not"):
                    yield from walk(f"{where}.{key}", value)

    for path, item in schema["paths"].items():
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                yield from walk(f"{label} {parameter['name']}", parameter["schema"])
            for content in operation.get("requestBody", {}).get("content", {}).values():
                yield from walk(f"{label} body", content.get("schema", {}))


def test_every_integer_a_client_sends_is_bounded(empty_app: TestClient) -> None:
    schema = empty_app.get("/openapi.json").json()
    unbounded = []
    integers = 0
    for where, node in _request_schemas(schema):
        if node.get("type") == "integer":
            integers += 1
            low = node.get("minimum", node.get("exclusiveMinimum"))
            high = node.get("maximum", node.get("exclusiveMaximum"))
            if low is None or high is None or not -JSON_SAFE_MAX <= low <= high <= JSON_SAFE_MAX:
                unbounded.append(f"{where}: [{low}, {high}]")
    assert unbounded == [], "\n".join(unbounded)
    assert integers >= 30  # the walk reaches the request models


def test_query_times_and_filters_state_their_form(empty_app: TestClient) -> None:
    schema = empty_app.get("/openapi.json").json()
    audit = {p["name"]: p["schema"] for p in schema["paths"]["/api/v1/audit"]["get"]["parameters"]}
    assert {v["format"] for v in audit["since"]["anyOf"]} == {"date-time", "date"}
    assert audit["project"]["pattern"] and audit["key_id"]["pattern"]
    jobs = {p["name"]: p["schema"] for p in schema["paths"]["/api/v1/jobs"]["get"]["parameters"]}
    assert jobs["state"]["enum"] == ["queued", "running", "succeeded", "failed", "cancelled"]
    events = schema["paths"]["/api/v1/jobs/{job_id}/events"]["get"]["parameters"]
    assert next(p for p in events if p["in"] == "header")["schema"]["pattern"] == "^[0-9]{1,15}$"
