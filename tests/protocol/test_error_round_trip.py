"""Every error kind, raised by a server, comes back as the same kind from the SDK and from the router's
wire to replicas: both read stratus.protocol's one table, over real HTTP servers on loopback.

Two servers: one whose infer route raises the kind its path names (so every kind is covered, through the
API's real error handlers), and a real replica app serving a bundle (errors that arise on their own)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pytest
from fastapi import FastAPI, Request
from threaded_server import serve

from onnx_factory import affine_model
from stratus import errors, protocol
from stratus.api.errors import install_error_handlers
from stratus.api.serving import create_endpoint_app
from stratus.deploy import bundle
from stratus.deploy.router import Replica, ReplicaClient
from stratus.registry.records import VersionInfo
from stratus.sdk import Client
from stratus.types import Signature, TensorSpec

KINDS: dict[str, type[errors.StratusError]] = {row.kind.kind: row.kind for row in protocol.TABLE}
TOKEN = "replica-token"


def test_the_table_covers_every_kind_both_ways() -> None:
    declared = {
        cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.StratusError)
    } - {errors.StratusError}
    assert set(KINDS.values()) == declared
    for kind in declared:
        error = kind("m")
        status, code = protocol.status_for(error), protocol.grpc_code_for(error)
        assert type(protocol.error_for_status(status, "m", protocol.kind_for(error))) is kind
        assert type(protocol.error_for_grpc_code(protocol.grpc_number(code), "m", protocol.kind_for(error))) is kind
        # Without the kind's name, each status still means its plain kind, never an unrelated one.
        assert isinstance(protocol.error_for_status(status, "m"), errors.StratusError)
    assert protocol.status_for(ValueError("bug")) == 500 and protocol.grpc_code_for(ValueError()) == "INTERNAL"
    # A kind name that disagrees with the status is not believed.
    assert type(protocol.error_for_status(404, "m", "rate_limited")) is errors.NotFound
    assert type(protocol.error_for_status(503, "m", "integrity_error")) is errors.IntegrityError
    assert type(protocol.error_for_status(503, "m")) is errors.NotReady
    assert type(protocol.error_for_status(418, "m")) is errors.StratusError


@dataclass
class _Process:
    """What the router needs of a replica process: where it listens and its key."""

    url: str
    token: str = TOKEN
    pid: int = 0


@pytest.fixture(scope="module")
def raising_server() -> Iterator[str]:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str) -> None:
        kind = KINDS[name]
        raise kind(f"raised {name}", 3.0) if kind is errors.RateLimited else kind(f"raised {name}")  # type: ignore[call-arg]

    yield from serve(app)


def _version(model: str, number: int = 1) -> VersionInfo:
    signature = Signature((TensorSpec("x", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (-1, 3)),))
    return VersionInfo(
        1, model, number, "", 0, "onnx", signature, {}, {}, {}, None, None, None, "", "active", "healthy", "",
        datetime(2026, 1, 1), (), {},
    )  # fmt: skip


def _router_call(url: str, model: str, inputs: dict[str, np.ndarray], token: str = TOKEN) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    replica = Replica("r1", _Process(url, token))

    async def call() -> dict[str, np.ndarray]:  # type: ignore[type-arg]
        client = ReplicaClient()
        try:
            return await client.infer(replica, _version(model, 2), inputs, None)
        finally:
            client._connections(url).close()  # keep-alive connections die with this event loop
            await asyncio.sleep(0)

    return asyncio.run(call())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_sdk_and_router_raise_the_kind_the_server_raised(raising_server: str, kind: str) -> None:
    with Client(raising_server, api_key="k") as client, pytest.raises(errors.StratusError) as by_sdk:
        client.request("POST", f"/v2/models/{kind}/versions/1/infer", json={"inputs": []})
    with pytest.raises(errors.StratusError) as by_router:
        _router_call(raising_server, kind, {"x": np.zeros((1, 3), np.float32)})
    for caught in (by_sdk.value, by_router.value):
        assert type(caught) is KINDS[kind] and f"raised {kind}" in caught.message
    if kind == "rate_limited":
        assert isinstance(by_sdk.value, errors.RateLimited) and by_sdk.value.retry_after_s == 3.0


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = affine_model()
    digest = "sha256:" + hashlib.sha256(model).hexdigest()
    version = dataclasses.replace(_version("affine", 2), digest=digest)
    entries = bundle.build("ep", [bundle.Route("affine", 2, 100)], lambda m, v: version, lambda v, d: model)
    folder = tmp_path_factory.mktemp("bundle")
    bundle.write_dir(entries, folder)
    app = create_endpoint_app(
        bundle.BundleCatalog.from_dir(folder), key_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(), threads=1
    )
    yield from serve(app)


def test_a_real_replicas_errors_reach_the_router_as_their_kinds(replica: str) -> None:
    good = {"x": np.ones((2, 3), np.float32)}
    assert _router_call(replica, "affine", good)["y"].shape == (2, 3)
    cases: list[tuple[type[errors.StratusError], str, dict[str, np.ndarray], str]] = [  # type: ignore[type-arg]
        (errors.InvalidInput, "affine", {"x": np.ones((2, 4), np.float32)}, TOKEN),
        (errors.NotFound, "nothing", good, TOKEN),
        (errors.Unauthenticated, "affine", good, "wrong-token"),
    ]
    for kind, model, inputs, token in cases:
        with pytest.raises(errors.StratusError) as caught:
            _router_call(replica, model, inputs, token)
        assert type(caught.value) is kind, caught.value
