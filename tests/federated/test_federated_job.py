"""A federated job through Stratus: created over the API, joined with federated keys bound to it, run by the job
runner's child (the Flower ServerApp), registered with a lineage naming the federation. The bad joins (another job's
key, a client of another shape, a name that joined already) are clear 4xx and the job goes on. One module, one app."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import as_admin, bearer, make_settings, scaled
from federated.shards import digits, npz_bytes, shard_rows
from stratus.api import create_app
from stratus.federated import client as fc

CLASSES = [str(i) for i in range(10)]


def request(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "fed-digits",
        "model": "logistic_regression",
        "features": 64,
        "classes": CLASSES,
        "rounds": 2,
        "min_clients": 2,
        "strategy": "fedprox",
        "proximal_mu": 0.01,
        "local_epochs": 3,
        "round_timeout_s": scaled(30),
        "params": {"lr": 0.05, "batch_size": 16},
        "timeout_s": int(scaled(120)),
    }
    body.update(changes)
    return body


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("home")
    with TestClient(create_app(make_settings(home, job_threads=1))) as client:
        as_admin(client)
        job = client.post("/api/v1/federated/jobs", json=request())
        assert job.status_code == 201, job.text
        other = client.post("/api/v1/federated/jobs", json=request(name="fed-other")).json()  # queued behind it
        keys = [client.post(f"/api/v1/federated/jobs/{job.json()['id']}/keys").json() for _ in range(2)]
        other_key = client.post(f"/api/v1/federated/jobs/{other['id']}/keys").json()
        yield {"client": client, "job": job.json()["id"], "other": other["id"], "keys": keys, "other_key": other_key}
        client.post(f"/api/v1/jobs/{other['id']}/cancel")


def join(world: dict[str, Any], key: str, body: dict[str, Any]) -> Any:
    """POST join, waiting (503) while the job's server starts."""
    client: TestClient = world["client"]
    deadline = time.monotonic() + scaled(60)
    while True:
        response = client.post(f"/api/v1/federated/jobs/{world['job']}/join", json=body, headers=bearer(key))
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_create_refuses_what_cannot_run(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    for bad in (
        request(model="cnn"),  # a cnn needs images
        request(secure_aggregation=True, min_clients=1),  # a sum of one is that client's update
        request(features=None),  # no shape at all
        request(strategy="fedsgd"),
    ):
        response = client.post("/api/v1/federated/jobs", json=bad)
        assert response.status_code == 400, (bad, response.text)
    # A key for a job that is not a federated job of the project: 404.
    assert client.post(f"/api/v1/federated/jobs/{'0' * 32}/keys").status_code == 404


def test_bad_joins_are_clear_4xx_and_two_clients_train_the_job(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    key, second_key = world["keys"][0]["key"], world["keys"][1]["key"]
    good = {"client": "branch-a", "features": 64, "classes": CLASSES[:5]}
    assert join(world, world["other_key"]["key"], good).status_code == 403  # bound to another job
    assert client.post(f"/api/v1/federated/jobs/{world['job']}/join", json=good).status_code == 403  # admin: no role
    wrong = join(world, key, {**good, "features": 63})
    assert wrong.status_code == 400 and "64 features" in wrong.json()["error"]
    assert join(world, key, {**good, "classes": ["cat"]}).status_code == 400
    first = join(world, key, good)
    assert first.status_code == 200, first.text
    answer_a = first.json()
    assert answer_a["address"].startswith("127.0.0.1:")  # loopback by default
    assert join(world, second_key, good).status_code == 409  # the same client name again
    answer_b = join(world, second_key, {**good, "client": "branch-b"}).json()

    X, y = digits()
    shards = shard_rows(y, clients=2, limit=150)
    errors: list[BaseException] = []

    def train(answer: dict[str, Any], rows: np.ndarray) -> None:
        try:
            prepared = fc.prepare(npz_bytes(X[rows].reshape(len(rows), 64), y[rows]), "local.npz")
            fc.train_joined(answer, prepared)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=train, args=(answer, rows), daemon=True)
        for answer, rows in zip((answer_a, answer_b), shards, strict=True)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + scaled(120)
    while (job := client.get(f"/api/v1/jobs/{world['job']}").json())["state"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    for thread in threads:
        thread.join(scaled(30))
    assert errors == []
    assert job["state"] == "succeeded", job["error"]

    # Progress per round in the job's events and its progress: joined, dropped, loss, each client's accuracy.
    events = client.get(f"/api/v1/jobs/{world['job']}/logs").json()["events"]
    rounds = [e["data"] for e in events if e["kind"] == "epoch"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[-1]["joined"] == ["branch-a", "branch-b"] and rounds[-1]["dropped"] == []
    assert set(rounds[-1]["clients"]) == {"branch-a", "branch-b"} and rounds[-1]["loss"] > 0
    assert [e["data"]["client"] for e in events if e["kind"] == "join"] == ["branch-a", "branch-b"]

    # The registered version: usual metrics, a lineage naming the federation and no data set.
    version = client.get(f"/api/v1/models/fed-digits/versions/{job['version']}").json()
    federation = version["lineage"]["federation"]
    assert federation["clients"] == ["branch-a", "branch-b"]
    assert federation["rounds"] == 2 and federation["strategy"] == "fedprox" and federation["secure_aggregation"]
    assert version["lineage"]["dataset"] is None and version["lineage"]["source"] == "federated:logistic_regression"
    assert 0.5 < version["metrics"]["accuracy"] <= 1.0
    row = X[0].reshape(1, 64).tolist()
    inference = client.post(
        "/v2/models/fed-digits/infer",
        json={"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row[0]}]},
    )
    assert inference.status_code == 200, inference.text
    # The ended job takes no more joins: a clear 409.
    assert join(world, key, {**good, "client": "late"}).status_code == 409
