"""Endpoints on a real server with real replica processes, under bounded loopback load: traffic splits,
sticky and shadow routing, rolling and canary rollouts, kill -9 of a replica, scale to zero and back. One
end-to-end run of each feature; the autoscaler's and the canary's decisions (scale up and down, automatic
rollback) are unit tests on a fake clock (tests/deploy/test_controller_parts.py).
The figures these tests check are recorded in docs/deployments.md."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from deploy_helpers import (
    DIGITS_BODY,
    IRIS_BODY,
    LoadResult,
    create,
    delete,
    events,
    get,
    load,
    metric,
    ready_replicas,
    register_copy,
    revisions,
    update,
    wait_for,
    wait_live,
)

from conftest import KeyedTritonClient, LiveServer, scaled, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("deploy") / "home", sample_cache)
    assert register_copy(server, "iris") == 2
    assert register_copy(server, "digits") == 2
    yield server
    server.stop()
    # Replicas leave with their server.
    assert "endpoint_server" not in "".join(Path(f"/proc/{p}/cmdline").read_text() for p in _children(server.pid))


def _children(pid: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(f"/proc/{entry.name}/stat").read_text().split()[3] == str(pid):
                    found.append(entry.name)
            except (OSError, IndexError):
                continue
    return found


def test_an_endpoint_serves_every_protocol_and_says_which_version(server: LiveServer) -> None:
    endpoint = create(server, "flowers", targets=[{"model": "iris", "version": "1"}])
    assert len(ready_replicas(endpoint)) == 1
    client = KeyedTritonClient(server)
    try:
        for binary in (False, True):
            inp = triton.InferInput("input", [1, 4], "FP32")
            inp.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32), binary_data=binary)
            result = client.infer("flowers", [inp], outputs=[triton.InferRequestedOutput("label", binary_data=binary)])
            assert result.get_response()["model_name"] == "flowers"
            assert result.get_response()["model_version"] == "1"
            assert result.as_numpy("label").tolist() == [0]
        assert client.get_model_metadata("flowers")["name"] == "flowers"
        assert client.is_model_ready("flowers")
    finally:
        client.close()
    v1 = server.post(f"{server.url}/v1/models/flowers:predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert v1.status_code == 200 and v1.json()["predictions"][0]["label"] == 0
    kinds = [e["kind"] for e in events(server, "flowers")]
    assert kinds[:2] == ["revision_created", "rollout_started"] and "revision_live" in kinds
    assert metric(server, "stratus_endpoint_replicas", endpoint="flowers", state="ready") == 1


def test_bad_endpoint_requests_get_clear_errors(server: LiveServer) -> None:
    url = f"{server.url}/api/v1/endpoints"
    r = server.post(url, json={"name": "x", "targets": [{"model": "nope"}]})
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = server.post(url, json={"name": "iris", "targets": [{"model": "iris"}]})
    assert r.status_code == 409 and "model's name" in r.json()["error"]
    r = server.post(url, json={"name": "x", "targets": [{"model": "iris", "weight": 0}]})
    assert r.status_code == 400 and "weights add up to 0" in r.json()["error"]
    r = server.post(url, json={"name": "x", "targets": [{"model": "iris", "version": "9"}]})
    assert r.status_code == 404
    create(server, "once", targets=[{"model": "iris"}])
    r = server.post(f"{url}/once/rollback", json={})
    assert r.status_code == 409 and "no earlier revision" in r.json()["error"]
    r = server.post(url, json={"name": "once", "targets": [{"model": "iris"}]})
    assert r.status_code == 409 and "already exists" in r.json()["error"]
    delete(server, "once")


def test_canary_weights_90_10_hold_over_5000_requests(server: LiveServer) -> None:
    create(
        server,
        "split",
        targets=[{"model": "iris", "version": "1", "weight": 90}, {"model": "iris", "version": "2", "weight": 10}],
    )
    result = load(server, "/v2/models/split/infer", IRIS_BODY, requests=5000, concurrency=16, max_seconds=120)
    assert result.failures == [] and result.total == 5000
    share = result.versions["2"] / 5000
    print(f"\nFIGURE canary 90/10: v1 {result.versions['1']}, v2 {result.versions['2']} ({share:.2%})")
    assert abs(share - 0.10) <= 0.03
    delete(server, "split")


def test_sticky_header_keeps_each_user_on_one_version(server: LiveServer) -> None:
    targets = [{"model": "iris", "version": "1", "weight": 50}, {"model": "iris", "version": "2", "weight": 50}]
    create(server, "ab", targets=targets, sticky_header="X-User")
    seen: dict[str, set[str]] = {}
    for user in range(20):
        for _ in range(4):
            r = server.post(f"{server.url}/v2/models/ab/infer", json=IRIS_BODY, headers={"X-User": f"user-{user}"})
            seen.setdefault(f"user-{user}", set()).add(r.json()["model_version"])
    assert all(len(versions) == 1 for versions in seen.values())
    assert set().union(*seen.values()) == {"1", "2"}
    delete(server, "ab")


def test_shadow_gets_a_copy_of_traffic_and_its_answers_are_dropped(server: LiveServer) -> None:
    create(server, "shadowed", targets=[{"model": "iris", "version": "1"}], shadows=[{"model": "iris", "version": "2"}])
    result = load(server, "/v2/models/shadowed/infer", IRIS_BODY, requests=200, concurrency=4, max_seconds=60)
    assert result.failures == [] and dict(result.versions) == {"1": 200}
    wait_for(
        lambda: metric(server, "stratus_endpoint_shadow_requests_total", endpoint="shadowed", outcome="success") == 200,
        10,
        "200 shadow copies",
    )
    delete(server, "shadowed")


def test_rolling_update_under_load_fails_nothing(server: LiveServer) -> None:
    create(server, "digits-live", targets=[{"model": "digits", "version": "1"}])
    # The load runs until the new revision has served a while, however long the rollout takes here; the
    # waits are on what the load has seen, not on fixed sleeps.
    result = LoadResult()
    stop = threading.Event()

    def drive() -> None:
        load(
            server,
            "/v2/models/digits-live/infer",
            DIGITS_BODY,
            requests=10**7,
            concurrency=16,
            max_seconds=scaled(120),
            stop=stop,
            result=result,
        )

    thread = threading.Thread(target=drive)
    thread.start()
    wait_for(lambda: result.versions["1"] >= 200, 30, "load on version 1")
    started = time.monotonic()
    update(server, "digits-live", targets=[{"model": "digits", "version": "2"}])
    endpoint = wait_live(server, "digits-live", revision=2)
    rolled = time.monotonic() - started
    wait_for(lambda: len([t for t, _ in result.timeline if t > started + rolled + 1]) >= 200, 30, "load after it")
    stop.set()
    thread.join(scaled(90))
    assert result.failures == [], result.failures[:5]
    versions = result.versions
    print(f"\nFIGURE rolling update: {result.total} requests at c=16, {versions}, rollout {rolled:.1f} s")
    assert versions["1"] > 0 and versions["2"] > 0
    last = [v for t, v in result.timeline if t > started + rolled + 1]
    assert last and set(last) == {"2"}
    assert [t["version"] for t in endpoint["live"]["targets"]] == [2]
    assert [r["status"] for r in revisions(server, "digits-live")] == ["superseded", "live"]


def test_kill_9_of_one_of_two_replicas_fails_no_request(server: LiveServer) -> None:
    endpoint = create(
        server, "sturdy", targets=[{"model": "iris", "version": "1"}], scaling={"min_replicas": 2, "max_replicas": 2}
    )
    replicas = ready_replicas(endpoint)
    assert len(replicas) == 2
    time.sleep(3)  # the spare process started with the endpoint finishes its imports (a running server's has)
    outcome: dict[str, LoadResult] = {}

    def drive() -> None:
        outcome["result"] = load(
            server, "/v2/models/sturdy/infer", IRIS_BODY, requests=3000, concurrency=16, max_seconds=60
        )

    thread = threading.Thread(target=drive)
    thread.start()
    time.sleep(2)
    victim = replicas[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    restored = wait_for(
        lambda: len([r for r in ready_replicas(get(server, "sturdy")) if r["pid"] != victim]) == 2, 10, "a replacement"
    )
    back_in = time.monotonic() - killed
    thread.join(scaled(90))
    result = outcome["result"]
    assert restored and result.failures == [], result.failures[:5]
    restart = next(e for e in events(server, "sturdy") if e["kind"] == "replica_restarted")
    ready_s = restart["detail"]["ready_seconds"]
    print(f"\nFIGURE kill -9: {result.total} requests, 0 failed, replacement ready {ready_s} s ({back_in:.2f} s after)")
    assert restart["detail"]["pid"] == victim and restart["detail"]["exit_code"] == -9
    assert restart["detail"]["ready_seconds"] > 0  # how fast is for benchmarks; here, that it was measured
    assert metric(server, "stratus_endpoint_replica_restarts_total", endpoint="sturdy") == 1
    # Requests in flight on the killed replica were retried once on the other one (16 in flight, 2 replicas).
    assert metric(server, "stratus_endpoint_retries_total", endpoint="sturdy") >= 1
    delete(server, "sturdy")


def test_scale_to_zero_and_the_first_request_after_it_succeeds(server: LiveServer) -> None:
    scaling = {"min_replicas": 0, "max_replicas": 1, "cooldown_seconds": 1}
    create(server, "sleepy", targets=[{"model": "iris", "version": "1"}], scaling=scaling)
    wait_for(lambda: any(e["kind"] == "scaled_to_zero" for e in events(server, "sleepy")), 15, "scale to zero")
    wait_for(lambda: get(server, "sleepy")["live"]["targets"][0]["replicas"] == [], 10, "no replica left")
    assert server.get(f"{server.url}/v2/models/sleepy/ready").status_code == 200  # at zero is still servable
    started = time.monotonic()
    r = server.post(f"{server.url}/v2/models/sleepy/infer", json=IRIS_BODY)
    first = time.monotonic() - started
    assert r.status_code == 200 and r.json()["model_version"] == "1"
    woke = next(e for e in events(server, "sleepy") if e["kind"] == "scaled_from_zero")
    print(f"\nFIGURE scale from zero: cold start {woke['detail']['cold_start_seconds']} s, first request {first:.3f} s")
    # How fast is for benchmarks (make bench-deploy); here only that the wake-up was measured and reported.
    assert woke["detail"]["cold_start_seconds"] > 0
    assert metric(server, "stratus_endpoint_cold_start_seconds_count", endpoint="sleepy") == 1
    delete(server, "sleepy")


def test_canary_steps_through_and_the_manual_rollback_returns(server: LiveServer) -> None:
    create(server, "careful", targets=[{"model": "iris", "version": "1"}])
    # A healthy canary goes 20% -> 100%, and the manual rollback returns to revision 1's version.
    update(
        server,
        "careful",
        targets=[{"model": "iris", "version": "2"}],
        rollout="canary",
        canary={"steps": [20, 100], "step_seconds": 1, "max_error_rate": 0.5},
    )
    wait_live(server, "careful", revision=2)
    steps = [
        e["detail"]["percent"]
        for e in events(server, "careful")
        if e["kind"] == "traffic_shifted" and e["revision"] == 2
    ]
    assert steps == [20, 100]
    r = server.post(f"{server.url}/api/v1/endpoints/careful/rollback", json={})
    assert r.status_code == 200
    endpoint = wait_live(server, "careful", revision=3)
    assert [t["version"] for t in endpoint["live"]["targets"]] == [1]
    assert [r["status"] for r in revisions(server, "careful")] == ["superseded", "superseded", "live"]
    assert "rollback to revision 1" in revisions(server, "careful")[-1]["reason"]
    delete(server, "careful")
    assert server.get(f"{server.url}/api/v1/endpoints/careful").status_code == 404
