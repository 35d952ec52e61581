"""Two real `stratus serve` processes on one PostgreSQL (the run's, on 127.0.0.1), as a scaled-out deployment runs
them: the same master key and key pepper, one artifact folder. One topology for the module, several checks, the
kill -9 of the endpoint-control holder last."""

from __future__ import annotations

import base64
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from deploy_helpers import IRIS_BODY, wait_for, wait_live

from conftest import LiveServer, bearer, scaled, start_server
from onnx_factory import affine_model
from pg import PostgresServer


@pytest.fixture(scope="module")
def pair(
    postgres: PostgresServer, sample_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, LiveServer, str]]:
    root = tmp_path_factory.mktemp("shared-pg")
    database = postgres.create_database(template=None)  # empty: the two servers migrate it, one after the other
    env = {
        "STRATUS_DATABASE_URL": postgres.url(database),
        "STRATUS_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "STRATUS_KEY_PEPPER": base64.b64encode(secrets.token_bytes(32)).decode(),
        "STRATUS_ARTIFACTS": str(root / "artifacts"),
        "STRATUS_JOB_THREADS": "1",
    }
    first = start_server(root / "one", sample_cache, env=env)  # first up: it takes endpoint control
    second = start_server(root / "two", sample_cache, env=env)
    key = first.admin_key  # the second server found keys in the database and made none
    assert not (second.home / "admin.key").exists()
    yield first, second, key
    for server in (second, first):
        server.stop()
    postgres.drop_database(database)


def _headers(key: str) -> dict[str, str]:
    return bearer(key)


def test_a_key_made_on_one_server_works_on_the_other_and_its_revocation_reaches_it(
    pair: tuple[LiveServer, LiveServer, str],
) -> None:
    one, two, admin = pair
    made = httpx.post(
        f"{one.url}/api/v1/keys", json={"scopes": ["read"], "name": "x"}, headers=_headers(admin), timeout=scaled(30)
    )
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["id"]
    assert httpx.get(f"{two.url}/api/v1/models", headers=_headers(key), timeout=scaled(30)).status_code == 200
    assert httpx.delete(f"{one.url}/api/v1/keys/{key_id}", headers=_headers(admin), timeout=scaled(30)).status_code in (
        200,
        204,
    )
    # The other server trusts its cached check at most STRATUS_KEY_CACHE_SECONDS (0.5 s).
    wait_for(
        lambda: httpx.get(f"{two.url}/api/v1/models", headers=_headers(key), timeout=scaled(30)).status_code == 401,
        10,
        "the revocation to reach the other server",
    )


def test_eight_uploads_of_one_version_on_two_servers_one_wins(pair: tuple[LiveServer, LiveServer, str]) -> None:
    one, two, admin = pair
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def upload(i: int) -> None:
        server = (one, two)[i % 2]
        data = affine_model(scale=float(i + 1))
        barrier.wait()
        r = httpx.post(
            f"{server.url}/api/v1/models/race/versions",
            files={"file": ("m.onnx", data)},
            data={"version": "3"},
            headers=_headers(admin),
            timeout=scaled(30),
        )
        statuses.append(r.status_code)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] + [409] * 7
    for server in (one, two):
        versions = httpx.get(
            f"{server.url}/api/v1/models/race/versions", headers=_headers(admin), timeout=scaled(30)
        ).json()["versions"]
        assert [v["version"] for v in versions] == [3]


def test_an_alias_moved_on_one_server_is_served_by_the_other(pair: tuple[LiveServer, LiveServer, str]) -> None:
    one, two, admin = pair
    for scale in (1.0, 2.0):
        r = httpx.post(
            f"{one.url}/api/v1/models/moved/versions",
            files={"file": ("m.onnx", affine_model(scale=scale))},
            headers=_headers(admin),
            timeout=scaled(30),
        )
        assert r.status_code == 201, r.text
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 1.0, 1.0]}]}

    def served_by_two() -> int:
        r = httpx.post(f"{two.url}/v2/models/moved/infer", json=body, headers=_headers(admin), timeout=scaled(30))
        assert r.status_code == 200, r.text
        return int(r.json()["model_version"])

    for version in (1, 2):
        set_alias = httpx.put(
            f"{one.url}/api/v1/models/moved/aliases/production",
            json={"version": version},
            headers=_headers(admin),
            timeout=scaled(30),
        )
        assert set_alias.status_code == 200, set_alias.text
        # The other server's name/alias cache lives at most its TTL (2 s): it serves the new target after that.
        wait_for(lambda v=version: served_by_two() == v, 10, f"server two to serve version {version}")


def test_a_training_job_submitted_to_one_server_runs_once(pair: tuple[LiveServer, LiveServer, str]) -> None:
    one, two, admin = pair
    r = httpx.post(f"{one.url}/api/v1/datasets/builtin", json={"name": "iris"}, headers=_headers(admin), timeout=60)
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{one.url}/api/v1/jobs",
        json={"dataset": "iris", "model": "logistic_regression", "name": "trained"},
        headers=_headers(admin),
        timeout=scaled(30),
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    def ended() -> dict[str, object] | None:
        job: dict[str, object] = httpx.get(
            f"{two.url}/api/v1/jobs/{job_id}", headers=_headers(admin), timeout=scaled(30)
        ).json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    job = wait_for(ended, 120, "the training job to end")
    assert job["state"] == "succeeded" and job["attempts"] == 1, job
    events = httpx.get(f"{one.url}/api/v1/jobs/{job_id}/logs", headers=_headers(admin), timeout=scaled(30)).json()[
        "events"
    ]
    assert [e["data"]["state"] for e in events if e["kind"] == "state"] == ["queued", "running", "succeeded"]
    versions = httpx.get(
        f"{two.url}/api/v1/models/trained/versions", headers=_headers(admin), timeout=scaled(30)
    ).json()["versions"]
    assert [v["version"] for v in versions] == [1]


def test_kill_9_of_the_control_holder_hands_endpoints_to_the_other(pair: tuple[LiveServer, LiveServer, str]) -> None:
    one, two, admin = pair
    assert "now holds endpoint-control" in one.log.read_text()
    assert "now holds endpoint-control" not in two.log.read_text()
    # Made on the follower: recorded there, rolled out by the holder (its sync, within a renewal or two).
    spec = {"name": "flowers", "targets": [{"model": "iris", "version": "1"}], "scaling": {"min_replicas": 1}}
    r = httpx.post(f"{two.url}/api/v1/endpoints", json=spec, headers=_headers(admin), timeout=scaled(30))
    assert r.status_code == 201, r.text
    one_view = LiveServer(one.url, one.port, one.home, one.process, one.log)
    wait_live(one_view, "flowers")
    served = httpx.post(
        f"{one.url}/v2/models/flowers/infer", json=IRIS_BODY, headers=_headers(admin), timeout=scaled(30)
    )
    assert served.status_code == 200, served.text

    # The follower routes the endpoint's requests to the holder's replicas, through the routes it published.
    def follower_serves() -> bool:
        r = httpx.post(
            f"{two.url}/v2/models/flowers/infer", json=IRIS_BODY, headers=_headers(admin), timeout=scaled(30)
        )
        return r.status_code == 200 and r.json()["model_name"] == "flowers"

    wait_for(follower_serves, 30, "the follower to serve the endpoint through the published routes")

    killed_at = time.monotonic()
    os.kill(one.pid, 9)
    one.process.wait(timeout=scaled(10))

    def serving() -> bool:
        try:  # while the new holder starts its replica, a request may wait for it
            r = httpx.post(f"{two.url}/v2/models/flowers/infer", json=IRIS_BODY, headers=_headers(admin), timeout=30)
        except httpx.TimeoutException:
            return False
        return r.status_code == 200

    wait_for(lambda: "now holds endpoint-control" in two.log.read_text(), 30, "server two to take endpoint control")
    took = time.monotonic() - killed_at
    wait_for(serving, 60, "server two to serve the endpoint")
    ready = time.monotonic() - killed_at

    def recorded_ready() -> bool:  # the record follows the replica's first answers by a moment
        url = f"{two.url}/api/v1/endpoints/flowers"
        endpoint = httpx.get(url, headers=_headers(admin), timeout=scaled(30)).json()
        return bool(endpoint["state"] == "ready" and endpoint["live"] is not None)

    wait_for(recorded_ready, 30, "the endpoint recorded ready on server two")
    print(f"\ncontrol taken over {took:.1f} s after kill -9 of its holder; endpoint served again after {ready:.1f} s")
