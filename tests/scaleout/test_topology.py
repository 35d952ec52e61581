"""Scale-out on one machine, for real (#16): two Stratus servers sharing PostgreSQL and an S3 server, their jobs and
replicas on a two-node Ray cluster, all inside the test's own network namespace (scaleout_topology.py). One topology
per run; the checks run in this order, each leaving the cluster as the next expects."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scaleout_topology import Topology, shared_topology

from conftest import scaled

TERMINAL = {"succeeded", "failed", "cancelled"}
IRIS_ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


@pytest.fixture(scope="session")
def topology(tmp_path_factory: pytest.TempPathFactory, sample_cache: Path) -> Iterator[Topology]:
    yield from shared_topology(tmp_path_factory, sample_cache)  # the one test_distributed_training.py used too


def wait_for(what: str, check: Callable[[], Any], seconds: float, every: float = 0.2) -> Any:
    deadline = time.monotonic() + scaled(seconds)
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {scaled(seconds):.0f} s")


def finished_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        return job if job["state"] in TERMINAL else None

    job: dict[str, Any] = wait_for(f"job {job_id} to end", done, 120, every=0.3)
    return job


def events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    body = client.get(f"/api/v1/jobs/{job_id}/logs").json()
    return list(body["events"] if isinstance(body, dict) else body)


def ready_replicas(client: httpx.Client, endpoint: str) -> list[dict[str, Any]]:
    live = client.get(f"/api/v1/endpoints/{endpoint}").json().get("live") or {}
    return [r for t in live.get("targets", []) for r in t["replicas"] if r["state"] == "ready"]


class Load:
    """``concurrency`` threads sending iris rows to ``path`` until stopped (bounded by ``limit`` requests each)."""

    def __init__(self, topo: Topology, server: str, path: str, concurrency: int = 8, limit: int = 20_000) -> None:
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(topo.client(server, timeout=scaled(20)), path, limit), daemon=True)
            for _ in range(concurrency)
        ]

    def _run(self, client: httpx.Client, path: str, limit: int) -> None:
        with client:
            for _ in range(limit):
                if self._stop.is_set():
                    return
                try:
                    response = client.post(path, json=IRIS_ROW)
                    outcome = "" if response.status_code == 200 else f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    if outcome:
                        self.failed.append(outcome)
                    else:
                        self.ok += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(scaled(30))

    def served(self) -> int:
        with self._lock:
            return self.ok


def test_the_cluster_is_two_nodes_on_loopback_and_refuses_callers_without_its_token(topology: Topology) -> None:
    ray = topology.ready["ray"]
    nodes = [n for n in ray["nodes"] if n["alive"]]
    assert len(nodes) == 2
    assert {n["address"] for n in nodes} == {"127.0.0.1"}
    assert [n["cpus"] for n in nodes] == [1.0, 1.0]
    # ShadowRay: nothing reaches the cluster's control plane without the token.
    assert ray["gcs_answers"] == {"none": "UNAUTHENTICATED", "wrong": "UNAUTHENTICATED", "token": "OK"}


def test_a_job_on_each_server_runs_once_on_ray_and_both_servers_serve_its_version(topology: Topology) -> None:
    s1, s2 = topology["s1"], topology["s2"]
    created = s1.post("/api/v1/datasets/builtin", json={"name": "topo-iris", "builtin": "iris"})
    assert created.status_code == 201, created.text
    train = s1.post("/api/v1/jobs", json={"dataset": "topo-iris", "model": "logistic_regression", "name": "topo-lr"})
    assert train.status_code in (200, 201), train.text
    compress = s2.post(
        "/api/v1/models/iris/versions/1/compress",
        json={"methods": ["optimize"], "accuracy_budget": 0.05, "timing_seconds": 0.2},
    )
    assert compress.status_code in (200, 201, 202), compress.text
    node_ids = {n["id"] for n in topology.ready["ray"]["nodes"]}
    made = {}
    for server, job in ((s1, train.json()), (s2, compress.json())):
        done = finished_job(server, job["id"])
        assert done["state"] == "succeeded", done
        trail = events(server, job["id"])
        assert done["attempts"] == 1, (done, trail)
        placed = [e for e in trail if e["kind"] == "placed"]
        assert len(placed) == 1, trail  # one Ray task ran it, once
        assert placed[0]["data"]["executor"] == "ray" and placed[0]["data"]["node"] in node_ids
        assert [e["data"]["state"] for e in trail if e["kind"] == "state"].count("running") == 1
        # A training job's version; a compression job's variants (its own version is only a recommendation).
        made[done["model"]] = done["version"] if done["kind"] == "train" else done["metrics"]["versions"][0]
    assert set(made) == {"topo-lr", "iris"} and None not in made.values()
    for client in (s1, s2):  # the other server serves each version too: one DB, one artifact store
        for model, version in made.items():
            answer = client.post(f"/v2/models/{model}/versions/{version}/infer", json=IRIS_ROW)
            assert answer.status_code == 200, answer.text


def test_replicas_spread_over_both_nodes_and_a_killed_worker_is_replaced_without_a_failed_request(
    topology: Topology,
) -> None:
    s1 = topology["s1"]
    spec = {
        "name": "topo-flowers",
        "targets": [{"model": "iris", "version": 1}],
        "scaling": {"min_replicas": 2, "max_replicas": 2},
    }
    created = s1.post("/api/v1/endpoints", json=spec)
    assert created.status_code == 201, created.text
    holder = wait_for("2 ready replicas", lambda: _holder_with_replicas(topology, "topo-flowers", 2), 120)
    client = topology[holder]
    replicas = ready_replicas(client, "topo-flowers")
    assert len({r["node"] for r in replicas}) == 2, replicas  # SPREAD: one per node
    victim = replicas[0]
    with Load(topology, holder, "/v2/models/topo-flowers/infer") as load:
        wait_for("load to flow", lambda: load.served() >= 50, 60)
        os.kill(int(victim["pid"]), signal.SIGKILL)  # the actor's Ray worker; its replica process dies with it
        replaced = wait_for(
            "a replacement replica",
            lambda: (
                [r for r in ready_replicas(client, "topo-flowers") if r["id"] != victim["id"]]
                if len([r for r in ready_replicas(client, "topo-flowers") if r["id"] != victim["id"]]) == 2
                else None
            ),
            120,
        )
        served_then = load.served()
        wait_for("load after the replacement", lambda: load.served() >= served_then + 50, 60)
    assert load.failed == [], load.failed[:5]
    assert victim["id"] not in {r["id"] for r in replaced}
    print(f"\n[scaleout] {load.ok} requests at c=8 around the kill, 0 failed")


def _holder_with_replicas(topology: Topology, endpoint: str, count: int) -> str | None:
    """The server whose controller runs the endpoint's replicas (the endpoint-control holder)."""
    for name in ("s1", "s2"):
        if len(ready_replicas(topology[name], endpoint)) >= count:
            return name
    return None


def _replica_processes(topology: Topology) -> set[int]:
    """Replica processes (the single-endpoint server) alive inside the topology's namespace."""
    return set(_in_namespace(topology, b"stratus.cli.endpoint_server"))


def _in_namespace(topology: Topology, module: bytes) -> list[int]:
    netns = os.readlink(f"/proc/{topology.ready['driver_pid']}/ns/net")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/net") != netns or not _running(int(entry)):
                continue
            command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if module in command:
            found.append(int(entry))
    return found


def _job_children(topology: Topology) -> list[int]:
    """Job child processes alive inside the topology's namespace (found by their module in the command line)."""
    return _in_namespace(topology, b"stratus.training.worker") + _in_namespace(topology, b"stratus.compress.worker")


def test_a_ray_job_is_cancelled_and_timed_out_like_a_local_one(topology: Topology) -> None:
    s2 = topology["s2"]
    assert s2.post("/api/v1/datasets/builtin", json={"name": "topo-digits", "builtin": "digits"}).status_code == 201
    job = s2.post(
        "/api/v1/jobs",
        json={"dataset": "topo-digits", "model": "mlp", "name": "topo-cancel", "params": {"epochs": 500}},
    ).json()
    wait_for("the job's task on a node", lambda: any(e["kind"] == "placed" for e in events(s2, job["id"])), 120)
    assert _job_children(topology), "the job's child runs on a Ray node inside the namespace"
    cancelled = s2.post(f"/api/v1/jobs/{job['id']}/cancel").json()
    assert finished_job(s2, job["id"])["state"] == "cancelled", cancelled
    # The force cancel killed the task's worker; the child went with it (its lifeline).
    wait_for("no job child left", lambda: not _job_children(topology), 30)
    assert s2.get("/api/v1/models/topo-cancel").status_code == 404  # nothing registered

    timed = s2.post(
        "/api/v1/models/iris/versions/1/compress",
        json={"methods": ["quantize-dynamic"], "timeout_s": 1, "timing_seconds": 0.2},
    ).json()
    done = finished_job(s2, timed["id"])
    assert done["state"] == "failed" and "timed out" in done["error"], done


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a killed server stays a zombie until the driver reaps it


def _holder(topology: Topology, alive: set[str]) -> str | None:
    """The running server that last said it holds endpoint control (and has not said it lost it since)."""
    for name in sorted(n for n in alive if _running(topology.pid(n))):
        log = topology.log(name)
        took, lost = log.rfind("now holds endpoint-control"), log.rfind("no longer holds endpoint-control")
        if took >= 0 and took > lost:
            return name
    return None


def test_kill_9_of_the_control_holder_loses_no_request_on_the_other_server_and_no_job(topology: Topology) -> None:
    """The endpoint of the replica test (2 replicas on Ray) and a job running on the holder when it is killed."""
    holder = wait_for("a holder of endpoint control", lambda: _holder(topology, {"s1", "s2"}), 30)
    survivor = "s2" if holder == "s1" else "s1"
    before = {r["url"] for r in ready_replicas(topology[holder], "topo-flowers")}
    assert len(before) == 2
    serving = _replica_processes(topology)
    assert len(serving) == 2
    owner = topology[holder]
    digits = owner.post("/api/v1/datasets/builtin", json={"name": "topo-digits-2", "builtin": "digits"})
    assert digits.status_code == 201, digits.text
    job = owner.post(
        "/api/v1/jobs",
        json={
            "dataset": "topo-digits-2",
            "model": "mlp",
            "name": "topo-failover",
            "params": {"epochs": 30},
            "retries": 1,
        },
    ).json()
    wait_for("the job running on the holder", lambda: any(e["kind"] == "placed" for e in events(owner, job["id"])), 120)
    first_worker = next(e["data"]["worker_pid"] for e in events(owner, job["id"]) if e["kind"] == "placed")
    with Load(topology, survivor, "/v2/models/topo-flowers/infer") as load:
        wait_for("load on the other server", lambda: load.served() >= 50, 60)
        killed_at = time.monotonic()
        os.kill(topology.pid(holder), signal.SIGKILL)
        wait_for("the other server to take endpoint control", lambda: _holder(topology, {survivor}) == survivor, 10)
        took_over = time.monotonic() - killed_at
        # It adopts the replicas that outlived their server (detached actors) rather than starting new ones: the
        # same two replica processes serve, and no other starts.
        adopted = wait_for(
            "the new holder to adopt both", lambda: topology.log(survivor).count("adopted replica") == 2, 60
        )
        assert _replica_processes(topology) == serving
        assert {r["url"] for r in ready_replicas(topology[survivor], "topo-flowers")} == before
        served_then = load.served()
        wait_for("load after the takeover", lambda: load.served() >= served_then + 50, 60)
    print(f"\n[scaleout] takeover {took_over:.1f} s after kill -9; {load.ok} requests at c=8 on {survivor}, 0 failed")
    assert adopted and load.failed == [], load.failed[:5]
    # Ray ended the task of the dead server; the other server re-queued the job, which ran once to completion.
    wait_for("the first attempt's worker to end", lambda: not Path(f"/proc/{first_worker}").exists(), 30)
    done = finished_job(topology[survivor], job["id"])
    trail = events(topology[survivor], job["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 2, (done, trail)
    assert [e["kind"] for e in trail].count("done") == 1, trail  # the child's last line, printed once
    assert [e["kind"] for e in trail].count("placed") == 2, trail


def test_a_replica_on_a_lost_node_is_replaced_on_the_other_without_a_failed_request(topology: Topology) -> None:
    """Last: it takes a node away. The raylet of the node without the cluster's head is killed; its workers, and the
    replica processes tied to them, go with it."""
    holder = wait_for("a holder of endpoint control", lambda: _holder(topology, {"s1", "s2"}), 30)
    client = topology[holder]
    raylets = topology.ready["ray"]["raylets"]
    head = next(n["id"] for n in topology.ready["ray"]["nodes"] if n["id"] in raylets and n.get("head"))
    lost = next(node for node in raylets if node != head)
    replicas = ready_replicas(client, "topo-flowers")
    assert {r["node"] for r in replicas} == {head, lost}, replicas
    with Load(topology, holder, "/v2/models/topo-flowers/infer") as load:
        wait_for("load to flow", lambda: load.served() >= 50, 60)
        os.kill(int(raylets[lost]), signal.SIGKILL)
        wait_for(
            "a replacement on the remaining node",
            lambda: len([r for r in ready_replicas(client, "topo-flowers") if r["node"] == head]) == 2,
            120,
        )
        served_then = load.served()
        wait_for("load after the replacement", lambda: load.served() >= served_then + 50, 60)
    assert load.failed == [], load.failed[:5]
    print(f"\n[scaleout] node lost: {load.ok} requests at c=8, 0 failed; both replicas now on the head node")
