"""The fast lane answers inference requests itself, as the router would, and passes everything else on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import APIRouter, Request, Response
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from conftest import bearer
from onnx_factory import affine_model
from stratus.api.app import INFERENCE_ROUTERS
from stratus.api.auth import ScopedRoute
from stratus.api.fastlane import FastLane, lanes_for

V2_BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


class Lane:
    """The lane in front of a stand-in for the router that only records what reached it."""

    def __init__(self, app: TestClient) -> None:
        self.app = app.app
        self.passed_on: list[str] = []
        self.lane = FastLane(self._router, routers=INFERENCE_ROUTERS)

    async def _router(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.passed_on.append(f"{scope['method']} {scope['path']}")
        await Response(status_code=299)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.app  # as the framework sets it before any middleware runs
        await self.lane(scope, receive, send)


@pytest.fixture
def app(empty_app: TestClient) -> TestClient:
    r = empty_app.post("/api/v1/models/affine/versions", files={"file": ("m.onnx", affine_model())})
    assert r.status_code == 201, r.text
    return empty_app


@pytest.fixture
def lane(app: TestClient) -> Iterator[tuple[Lane, TestClient]]:
    wrapped = Lane(app)
    client = TestClient(wrapped)  # no lifespan: the app's own client has started the platform
    client.headers.update(app.headers)
    yield wrapped, client
    client.close()


def test_every_inference_route_is_answered_by_the_lane_as_by_the_app(
    app: TestClient, lane: tuple[Lane, TestClient]
) -> None:
    wrapped, client = lane
    calls = [
        ("/v2/models/affine/infer", V2_BODY),
        ("/v2/models/affine/versions/1/infer", V2_BODY),
        ("/v1/models/affine:predict", {"instances": [[1, 2, 3]]}),
        ("/v1/models/affine/versions/1:predict", {"instances": [[1, 2, 3]]}),
    ]
    for path, body in calls:
        through_lane, through_app = client.post(path, json=body), app.post(path, json=body)
        assert through_lane.status_code == 200, through_lane.text
        assert through_lane.json() == through_app.json()
    assert wrapped.passed_on == []
    # The OpenAI route is in the lane too (it is served end to end with the openai client elsewhere).
    assert any(lane.path.match("/openai/v1/embeddings") for lane in wrapped.lane.lanes)


def test_everything_else_goes_on_to_the_router(lane: tuple[Lane, TestClient]) -> None:
    wrapped, client = lane
    assert client.get("/v2/models/affine").status_code == 299
    assert client.get("/v2/models/affine/infer").status_code == 299  # the router answers 405
    assert client.post("/v2/models/affine/infer/extra", json=V2_BODY).status_code == 299
    assert client.get("/api/v1/models").status_code == 299
    assert wrapped.passed_on == [
        "GET /v2/models/affine",
        "GET /v2/models/affine/infer",
        "POST /v2/models/affine/infer/extra",
        "GET /api/v1/models",
    ]


def test_errors_in_the_lane_are_the_apps_errors(app: TestClient, lane: tuple[Lane, TestClient]) -> None:
    wrapped, client = lane
    requests = [
        ("/v2/models/affine/infer", V2_BODY, {"Authorization": "Bearer wrong"}),
        ("/v2/models/nope/infer", V2_BODY, {}),
        ("/v2/models/affine/versions/7/infer", V2_BODY, {}),
        ("/v2/models/affine/infer", {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32"}]}, {}),
        ("/openai/v1/embeddings", {"model": "affine"}, {"Authorization": "Bearer wrong"}),
        ("/openai/v1/embeddings", {"input": "hello", "model": "nope"}, {}),
    ]
    for path, body, headers in requests:
        through_lane = client.post(path, json=body, headers=headers)
        through_app = app.post(path, json=body, headers=headers)
        assert 400 <= through_lane.status_code < 500, through_lane.text
        assert (through_lane.status_code, through_lane.json()) == (through_app.status_code, through_app.json())
        assert through_lane.headers.get("www-authenticate") == through_app.headers.get("www-authenticate")
    assert client.post("/v2/models/affine/infer", content=b"{not json").status_code == 400
    assert client.post("/v2/models/affine/infer", json=V2_BODY, headers=bearer("")).status_code == 401
    assert wrapped.passed_on == []


def test_a_route_that_needs_more_than_its_path_is_left_to_the_router() -> None:
    router = APIRouter(route_class=ScopedRoute)

    @router.post("/v2/models/{name}/infer")
    async def with_query(request: Request, name: str, verbose: int = 0) -> Response:
        return Response()

    @router.post("/v2/models/{name}/versions/{version}/infer")
    async def plain(request: Request, name: str, version: str) -> Response:
        return Response()

    lanes = lanes_for(router.routes)
    assert [lane.path.pattern for lane in lanes] == ["^/v2/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/infer$"]
