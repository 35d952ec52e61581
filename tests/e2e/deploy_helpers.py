"""Helpers of the deployment tests: endpoint calls on a live server and a bounded load generator."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from conftest import LiveServer, scaled

IRIS_BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
MINILM_BODY = {
    "inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Endpoints route requests to model replicas."]}
    ]
}
DIGITS_BODY = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 64}]}


def create(server: LiveServer, name: str, **spec: Any) -> dict[str, Any]:
    r = server.post(f"{server.url}/api/v1/endpoints", json={"name": name, **spec})
    assert r.status_code == 201, r.text
    return wait_live(server, name)


def update(server: LiveServer, name: str, **spec: Any) -> dict[str, Any]:
    r = server.put(f"{server.url}/api/v1/endpoints/{name}", json=spec)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def get(server: LiveServer, name: str) -> dict[str, Any]:
    r = server.get(f"{server.url}/api/v1/endpoints/{name}")
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def events(server: LiveServer, name: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = server.get(f"{server.url}/api/v1/endpoints/{name}/events").json()["events"]
    return result


def revisions(server: LiveServer, name: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = server.get(f"{server.url}/api/v1/endpoints/{name}/revisions").json()["revisions"]
    return result


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``check`` until it returns something true; ``timeout_s`` is scaled (see conftest.scaled)."""
    limit = scaled(timeout_s)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {limit:.0f} s waiting for {what}")


def wait_live(server: LiveServer, name: str, revision: int | None = None, timeout_s: float = 60) -> dict[str, Any]:
    def live() -> dict[str, Any] | None:
        endpoint = get(server, name)
        wanted = revision or endpoint["latest_revision"]
        return endpoint if endpoint["revision"] == wanted and endpoint["state"] == "ready" else None

    result: dict[str, Any] = wait_for(live, timeout_s, f"endpoint {name} to go live")
    return result


def ready_replicas(endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for t in endpoint["live"]["targets"] for r in t["replicas"] if r["state"] == "ready"]


def delete(server: LiveServer, name: str) -> None:
    assert server.delete(f"{server.url}/api/v1/endpoints/{name}").status_code == 204


@dataclass
class LoadResult:
    versions: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[tuple[int, str]] = field(default_factory=list)
    timeline: list[tuple[float, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.versions.values()) + len(self.failures)


async def run_load(
    server: LiveServer,
    path: str,
    body: dict[str, Any],
    *,
    requests: int,
    concurrency: int,
    max_seconds: float,
    headers_of: Callable[[int], dict[str, str]] | None = None,
    stop: threading.Event | None = None,
    result: LoadResult | None = None,
) -> LoadResult:
    """At most ``requests`` requests from ``concurrency`` workers, until ``stop`` is set, and after
    ``max_seconds`` anyway. A ``result`` given is filled as the load goes, so another thread can wait on it."""
    result = result if result is not None else LoadResult()
    deadline = time.monotonic() + max_seconds
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for i in counter:
                if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                    return
                extra = headers_of(i) if headers_of else {}
                try:
                    r = await client.post(path, json=body, headers=extra)
                except httpx.HTTPError as exc:
                    result.failures.append((0, repr(exc)))
                    continue
                if r.status_code == 200:
                    version = r.json()["model_version"]
                    result.versions[version] += 1
                    result.timeline.append((time.monotonic(), version))
                else:
                    result.failures.append((r.status_code, r.text[:300]))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


def load(server: LiveServer, path: str, body: dict[str, Any], **kwargs: Any) -> LoadResult:
    return asyncio.run(run_load(server, path, body, **kwargs))


def metric(server: LiveServer, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = server.get(f"{server.url}/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def register_copy(server: LiveServer, model: str, version: int = 1) -> int:
    """A new version of ``model`` with the same ONNX: a second version to route to."""
    artifact = server.get(f"{server.url}/api/v1/models/{model}/versions/{version}/artifact")
    assert artifact.status_code == 200, artifact.text
    r = server.post(f"{server.url}/api/v1/models/{model}/versions", files={"file": (f"{model}.onnx", artifact.content)})
    assert r.status_code == 201, r.text
    number: int = r.json()["version"]
    return number
