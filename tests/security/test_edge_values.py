"""Property-based: every route of the published schema, every parameter and top-level body field at the edge
of its type (0, -1, 2**31, 2**63, 10**30, 1e308, NaN, years 1 and 9999 at +-14:00, 5,000-digit strings,
70-dimension shapes), with each scope and with no key. No answer may be a 5xx or a status the schema does not
document for the operation, no keep-alive connection may be dropped, and without a key every route but
health is a 401.

The app runs under uvicorn in this process (real sockets, one client connection per operation), so a closed
connection shows as a new client port.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import bearer, free_port, make_settings, scaled
from onnx_factory import affine_model
from stratus.api import create_app

EXAMPLES_PER_OPERATION = 25
SCOPES = ("read", "predict", "manage", "admin")

INTEGERS: list[Any] = [0, -1, 2**31, 2**63, 10**30]
NUMBERS: list[Any] = [1e308, math.nan, -math.inf]
MOMENTS = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01", "9999-12-31T23:59:59+14:00"]
STRINGS = ["9" * 5000, "a" * 5000, "", "latest", "affine", "1"]
SHAPES: list[Any] = [[1] * 70, [0, 2**63 - 1, 2**63 - 1], [2**63], [-1, 4]]
EDGES: list[Any] = [*INTEGERS, *NUMBERS, *MOMENTS, *STRINGS]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    parameters: tuple[tuple[str, str], ...]  # (where, name)
    body: str | None  # media type
    properties: tuple[str, ...]
    documented: frozenset[int]
    public: bool

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def operations_of(schema: dict[str, Any]) -> list[Operation]:
    found = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {})
            media = next(iter(content), None)
            props = content[media]["schema"].get("properties", {}) if media else {}
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    parameters=tuple((p["in"], p["name"]) for p in op.get("parameters", [])),
                    body=media,
                    properties=tuple(props),
                    documented=frozenset(int(code) for code in op["responses"]),
                    public=op.get("x-required-scope") == "public",
                )
            )
    return found


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@st.composite
def requests_for(draw: st.DrawFn, op: Operation) -> dict[str, Any]:
    path, params, headers = op.path, {}, {}
    for where, name in op.parameters:
        if where == "path":
            # Never empty: an empty segment makes the URL another resource's (or a redirect to it).
            segment = draw(st.sampled_from([e for e in EDGES if e != ""]))
            path = path.replace("{" + name + "}", quote(_text(segment), safe=""), 1)
        elif draw(st.booleans()):
            value = _text(draw(st.sampled_from(EDGES)))
            if where == "query":
                params[name] = value
            elif where == "header":
                headers[name] = value.encode("ascii", "replace")
    request: dict[str, Any] = {"method": op.method, "url": path, "params": params, "headers": headers}
    if op.body == "multipart/form-data":
        fields = {name: _text(draw(st.sampled_from(EDGES))) for name in op.properties if draw(st.booleans())}
        files = {name: ("f", b"\x00" * 8) for name in ("file",) if name in op.properties}
        request.update(data={k: v for k, v in fields.items() if k not in files}, files=files or None)
    elif op.body is not None:
        fields = {name: draw(st.sampled_from([*EDGES, SHAPES, {"k": 2**63}])) for name in op.properties}
        chosen = {k: v for k, v in fields.items() if draw(st.booleans())}
        if "inputs" in op.properties:  # the inference routes: a tensor whose shape is at the edge
            shape = draw(st.sampled_from(SHAPES))
            chosen["inputs"] = [{"name": "x", "shape": shape, "datatype": draw(st.sampled_from(["FP32", "BYTES"]))}]
            chosen["instances"] = [[draw(st.sampled_from(EDGES))]]
        # json.dumps writes NaN and Infinity literals and integers of any size, as a hostile client would.
        request["content"] = json.dumps(chosen).encode()
        request["headers"]["content-type"] = op.body
    return request


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, dict[str, str]], list[Operation]]]:
    port = free_port()
    app = create_app(make_settings(tmp_path_factory.mktemp("edges") / "home", port=port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + scaled(30)
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    url = f"http://127.0.0.1:{port}"
    admin = bearer(app.state.platform.settings.resolved_admin_key_file.read_text().strip())
    with httpx.Client(base_url=url, headers=admin, timeout=scaled(30)) as client:
        assert client.post("/api/v1/models/affine/versions", files={"file": ("a.onnx", affine_model())}).is_success
        keys = {"none": {}, "admin": admin}
        for scope in SCOPES[:-1]:
            created = client.post("/api/v1/keys", json={"scopes": [scope], "name": f"edge-{scope}"})
            keys[scope] = bearer(created.json()["key"])
        schema = client.get("/openapi.json").json()
    yield url, keys, operations_of(schema)
    server.should_exit = True
    thread.join(timeout=scaled(30))


def test_every_route_answers_edge_values_without_5xx(
    served: tuple[str, dict[str, dict[str, str]], list[Operation]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, keys, operations = served
    assert len(operations) >= 60
    failures: list[str] = []
    sent = 0
    started = time.monotonic()
    for op in operations:
        with httpx.Client(base_url=url, timeout=scaled(30)) as client:
            ports: set[int] = set()

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(request=requests_for(op), scope=st.sampled_from(["none", *SCOPES]))
            def run(request: dict[str, Any], scope: str) -> None:
                nonlocal sent
                request["headers"] = {**request["headers"], **keys[scope]}
                try:
                    response = client.request(**request)
                except httpx.TransportError as exc:
                    failures.append(f"{op.label} [{scope}] {request['url'][:80]}: transport error {exc!r}")
                    return
                sent += 1
                ports.add(response.extensions["network_stream"].get_extra_info("client_addr")[1])
                where = f"{op.label} [{scope}] {request['url'][:80]} -> {response.status_code}"
                if response.status_code >= 500:
                    failures.append(f"{where}: {response.text[:200]}")
                elif response.status_code not in op.documented:
                    failures.append(f"{where}: not documented ({sorted(op.documented)})")
                if scope == "none" and not op.public and response.status_code not in (401, 413):
                    failures.append(f"{where}: without a key")

            run()
            if len(ports) > 1:
                failures.append(f"{op.label}: the server closed the keep-alive connection ({len(ports)} connections)")
    with capsys.disabled():
        print(f"\nedge values: {sent} requests over {len(operations)} operations in {time.monotonic() - started:.0f} s")
    assert failures == [], "\n".join(failures)
    # Operations with few parameters run out of distinct requests before EXAMPLES_PER_OPERATION.
    assert sent >= 1000


def test_the_edge_values_reach_what_they_aim_at(tmp_path: Path) -> None:
    """The strategy really sends the edge values: a 70-dimension shape, a 5,000-digit segment, NaN."""
    op = Operation(
        "POST",
        "/v2/models/{name}/versions/{version}/infer",
        (("path", "name"), ("path", "version")),
        "application/json",
        ("inputs",),
        frozenset(),
        False,
    )
    seen_shapes: set[int] = set()
    seen_digits = False

    @settings(max_examples=200, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(requests_for(op))
    def collect(request: dict[str, Any]) -> None:
        nonlocal seen_digits
        body = json.loads(request["content"])
        seen_shapes.add(len(body["inputs"][0]["shape"]))
        seen_digits |= "9" * 5000 in request["url"]

    collect()
    assert 70 in seen_shapes and seen_digits
