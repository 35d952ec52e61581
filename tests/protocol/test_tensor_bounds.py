"""Tensor shapes at the edge of their type, in every encoding the API takes (V2 JSON, V2 binary, V1): each
gets a 4xx that says what is wrong, before anything is allocated for it, and never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from threaded_server import serve

from conftest import admin_key_of, as_admin, bearer, free_port, make_settings, scaled
from onnx_factory import affine_model
from stratus import protocol
from stratus.api import create_app
from stratus.errors import InvalidInput

BODY_LIMIT = 1024 * 1024


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # orjson refuses integers past 64 bits, which these bodies need


INT64_MAX = 2**63 - 1

# (what, shape, data for JSON, bytes for binary, expected message)
SHAPES: list[tuple[str, list[Any], list[Any], int, str]] = [
    ("overflowing product, empty", [0, INT64_MAX, INT64_MAX], [], 0, "is too large"),
    ("65 dimensions", [1] * 65, [1.0], 4, "65 dimensions; at most 64"),
    ("70 dimensions", [1] * 70, [1.0], 4, "70 dimensions; at most 64"),
    ("a dimension past int64", [1, 2**63], [1.0], 4, "at most 2**63-1"),
    ("a dimension of 10**30", [10**30, 3], [1.0], 4, "at most 2**63-1"),
    ("a negative dimension", [-1, 3], [1.0], 4, "non-negative integers"),
    ("a fractional dimension", [1.5, 3], [1.0], 4, "non-negative integers"),
    ("a boolean dimension", [True, 3], [1.0], 4, "non-negative integers"),
    ("more elements than the body limit", [2**20, 3], [1.0], 4, "is too large"),
    ("the limit reached through zeros", [0, 2**40], [], 0, "is too large"),
]


def _json(shape: list[Any], data: list[Any], datatype: str = "FP32") -> dict[str, Any]:
    return {"content": _dumps({"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]})}


def _binary(shape: list[Any], size: int, datatype: str = "FP32") -> dict[str, Any]:
    header = _dumps(
        {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}]}
    )
    return {
        "content": header + bytes(size),
        "headers": {protocol.HEADER_LENGTH_HEADER: str(len(header)), "Content-Type": "application/octet-stream"},
    }


def _request_cases() -> list[Any]:
    cases = []
    for what, shape, data, size, expected in SHAPES:
        cases.append(pytest.param("/v2/models/affine/infer", _json(shape, data), expected, id=f"json {what}"))
        cases.append(pytest.param("/v2/models/affine/infer", _binary(shape, size), expected, id=f"binary {what}"))
        cases.append(
            pytest.param("/v2/models/affine/infer", _binary(shape, size, "BYTES"), expected, id=f"binary BYTES {what}")
        )
    digits = "9" * 5000
    good = _json([1, 3], [1.0, 2.0, 3.0])
    cases += [
        pytest.param(f"/v2/models/affine/versions/{digits}/infer", good, "at most", id="5000-digit version"),
        pytest.param(f"/v2/models/affine/versions/{2**63}/infer", good, "at most", id="version past int64"),
        pytest.param(f"/v1/models/affine/versions/{digits}:predict", {"json": {"instances": [[1, 2, 3]]}}, "at most",
                     id="5000-digit V1 version"),
        pytest.param("/v2/models/affine/infer",
                     {**good, "headers": {protocol.HEADER_LENGTH_HEADER: "9" * 5000}},
                     "Inference-Header-Content-Length is out of range", id="5000-digit header length"),
        pytest.param("/v2/models/affine/infer",
                     {"content": _dumps({"parameters": {"timeout": 10**30}, **json.loads(good["content"])})},
                     "parameter 'timeout'", id="timeout of 10**30"),
        pytest.param("/v1/models/affine:predict", {"content": b"[" * 70 + b"1" + b"]" * 70}, "must be",
                     id="V1 body not an object"),
        pytest.param("/v1/models/affine:predict",
                     {"content": b'{"instances": ' + b"[" * 70 + b"1.0" + b"]" * 70 + b"}"}, "dimension",
                     id="V1 70 levels of nesting"),
    ]  # fmt: skip
    return cases


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("bounds") / "home"
    settings = make_settings(home, max_request_bytes=BODY_LIMIT)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        as_admin(client)
        r = client.post("/api/v1/models/affine/versions", files={"file": ("m.onnx", affine_model())})
        assert r.status_code == 201, r.text
        yield client


@pytest.mark.parametrize(("path", "request_kwargs", "expected"), _request_cases())
def test_edge_shapes_get_a_4xx_that_says_why(
    app: TestClient, path: str, request_kwargs: dict[str, Any], expected: str
) -> None:
    response = app.post(path, **request_kwargs)
    assert 400 <= response.status_code < 500, response.text
    assert expected in response.json()["error"], response.text


def test_the_limits_follow_the_body_limit(app: TestClient) -> None:
    limits = app.app.state.tensor_limits  # type: ignore[attr-defined]
    assert limits == protocol.TensorLimits.for_request_bytes(BODY_LIMIT)
    # Right at the bounds: 64 dimensions and the most elements a body of the limit can declare.
    ok = app.post("/v2/models/affine/infer", **_json([1] * 62 + [1, 3], [1.0, 2.0, 3.0]))
    assert ok.status_code == 400 and "rank 2" in ok.json()["error"]  # the model's rank, not the bound
    at_limit = app.post("/v2/models/affine/infer", **_json([BODY_LIMIT // 3, 3], [1.0]))
    assert (
        at_limit.status_code == 400
        and f"needs {BODY_LIMIT // 3 * 3} values but 1 were given" in at_limit.json()["error"]
    )


def test_check_shape_bounds_bytes_and_elements() -> None:
    limits = protocol.TensorLimits(max_elements=100, max_bytes=400)
    assert protocol.check_shape("x", [10, 10], "FP32", limits) == (10, 10)
    # A dimension of 0 counts as 1, in the bytes too (as in numpy's own size check).
    assert protocol.check_shape("x", (0, 50), "FP64", limits) == (0, 50)
    with pytest.raises(InvalidInput, match="more than 400 bytes"):
        protocol.check_shape("x", (0, 51), "FP64", limits)
    with pytest.raises(InvalidInput, match="more than 400 bytes"):
        protocol.check_shape("x", [10, 10], "FP64", limits)
    with pytest.raises(InvalidInput, match="at most 100 elements"):
        protocol.check_shape("x", [101], "BOOL", limits)
    with pytest.raises(InvalidInput, match="shape must be a list"):
        protocol.check_shape("x", "10", "BOOL", limits)
    # Many large dimensions: the product stops growing at the first one past the bound.
    with pytest.raises(InvalidInput, match="too large"):
        protocol.check_shape("x", [INT64_MAX] * 64, "BOOL", protocol.NUMPY_LIMITS)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The same app behind uvicorn on loopback, to see the status on the wire and the connection after it."""
    home = tmp_path_factory.mktemp("bounds-live") / "home"
    port = free_port()
    app = create_app(make_settings(Path(home), max_request_bytes=BODY_LIMIT, port=port))
    servers = serve(app, port)
    url = next(servers)
    headers = bearer(admin_key_of(TestClient(app)))
    r = httpx.post(
        f"{url}/api/v1/models/affine/versions",
        files={"file": ("m.onnx", affine_model())},
        headers=headers,
        timeout=scaled(30),
    )
    assert r.status_code == 201, r.text
    yield url, headers
    servers.close()


def test_over_a_real_server_each_edge_case_is_a_4xx_and_the_connection_stays_usable(
    live: tuple[str, dict[str, str]],
) -> None:
    url, headers = live
    good = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    with httpx.Client(base_url=url, headers=headers) as client:
        for param in _request_cases():
            path, kwargs, expected = param.values
            sent = {**kwargs, "headers": {**headers, **kwargs.get("headers", {})}}
            response = client.post(path, **sent)
            assert 400 <= response.status_code < 500, (param.id, response.text)
            assert expected in response.json()["error"], (param.id, response.text)
            # Same keep-alive connection: the next request is served.
            assert client.post("/v2/models/affine/infer", json=good).status_code == 200, param.id
