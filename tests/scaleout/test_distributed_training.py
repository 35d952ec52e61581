"""Data-parallel training on the two-node test cluster (#21): ``workers`` runs a torch trainer as a Ray Train job.

One topology (shared with test_topology.py, which runs after this module) and one training job B, the digits CNN
with 2 workers, interrupted twice, so the checks cost one job's training. In order:

1. bad input gets a clear 4xx at submit;
2. B's workers run on both nodes (its events, and Ray's own actor table); a job W that does not fit beside it waits
   queued with the reason, and is cancelled there;
3. kill -9 of one of B's workers in epoch 3: Ray Train restarts the workers from its last checkpoint;
4. later, kill -9 of B's server, then the same server started again: B's workers end with it (as on a cancel), and
   B is taken over and resumes from its checkpoint in the artifact store;
5. B ends with one version and the one-worker job's accuracy target (>= 0.97).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scaleout_topology import Topology, shared_topology
from test_topology import events, finished_job, wait_for

from conftest import scaled

#: Small and quick: digits is 1,797 8x8 images; the global batch is 16 (8 a worker), the rate a little higher than
#: the default so six epochs reach the one-worker job's accuracy target.
CNN = {"epochs": 6, "batch_size": 16, "lr": 0.003, "seed": 0}
WORKER = {"workers": 2, "cpus_per_worker": 0.25}
#: What the module's checks share, in order (one pass of jobs).
state: dict[str, Any] = {}


@pytest.fixture(scope="session")
def topology(tmp_path_factory: pytest.TempPathFactory, sample_cache: Path) -> Iterator[Topology]:
    yield from shared_topology(tmp_path_factory, sample_cache)


def kinds(trail: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in trail if e["kind"] == kind]


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def train_actors(topology: Topology) -> list[dict[str, Any]]:
    """Ray's own record of the Ray Train worker actors: the GCS actor table, read by a token-holding driver inside the
    topology's network namespace."""
    script = (
        "import json, sys, ray\n"
        "from ray._private import state\n"
        "ray.init(address=sys.argv[1], log_to_driver=False)\n"
        "rows = [{'class': a['ActorClassName'], 'pid': a['Pid'], 'node': a['Address']['NodeID']}\n"
        "        for a in state.actors().values() if 'TrainWorker' in a['ActorClassName']]\n"
        "print(json.dumps(rows))\n"
    )
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(topology.run / "ray-token"),
        "PYTEST_ADDOPTS": "",
    }
    env.pop("RAY_AUTH_TOKEN", None)
    netns = f"/proc/{topology.ready['driver_pid']}/ns/net"
    command = ["nsenter", f"--net={netns}", sys.executable, "-c", script, topology.ready["ray"]["address"]]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=scaled(60), check=True)
    rows: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def test_bad_input_is_refused_at_submit_with_the_reason(topology: Topology) -> None:
    s1 = topology["s1"]
    created = s1.post("/api/v1/datasets/builtin", json={"name": "dist-digits", "builtin": "digits"})
    assert created.status_code == 201, created.text
    base = {"dataset": "dist-digits", "model": "cnn", "params": CNN}
    zero = s1.post("/api/v1/jobs", json={**base, "workers": 0})
    assert zero.status_code in (400, 422) and "workers" in zero.text, zero.text
    # Two nodes of one CPU each can never hold 64 workers of one CPU: refused now, not queued forever.
    huge = s1.post("/api/v1/jobs", json={**base, "workers": 64, "cpus_per_worker": 1})
    assert huge.status_code in (400, 422) and "can never place" in huge.json()["error"], huge.text
    sklearn = s1.post("/api/v1/jobs", json={"dataset": "dist-digits", "model": "logistic_regression", "workers": 2})
    assert sklearn.status_code in (400, 422), sklearn.text
    assert "mlp, cnn, text_classifier" in sklearn.json()["error"], sklearn.text
    assert s1.get("/api/v1/jobs").json()["jobs"] == []  # nothing was queued


def _workers(server: httpx.Client, job_id: str, after: int = 0) -> list[dict[str, Any]] | None:
    """The ``worker`` events of the job's worker group that started after the first ``after`` (one per rank)."""
    found = kinds(events(server, job_id), "worker")[after:]
    return found if len(found) >= 2 else None


def _checkpoints(server: httpx.Client, job_id: str) -> list[int]:
    return [c["epoch"] for c in kinds(events(server, job_id), "checkpoint")]


def test_the_workers_run_on_both_nodes_and_a_job_that_does_not_fit_beside_them_waits(topology: Topology) -> None:
    s1, s2 = topology["s1"], topology["s2"]
    body = {"dataset": "dist-digits", "model": "cnn", "name": "dist-cnn", "params": CNN, "retries": 1, **WORKER}
    state["B"] = job = submit(s1, body)
    workers = wait_for("B's 2 workers", lambda: _workers(s1, job["id"]), 180)
    assert {w["rank"] for w in workers} == {0, 1} and {w["workers"] for w in workers} == {2}
    nodes = {n["id"] for n in topology.ready["ray"]["nodes"]}
    assert {w["node"] for w in workers} == nodes, workers  # SPREAD: one worker on each node
    state["first-workers"] = workers
    # B takes 1 CPU of the 2 (0.5 for its driver, 2 x 0.25): a job asking for 0.5 + 2 x 0.5 waits, saying why.
    wait = {"dataset": "dist-digits", "model": "mlp", "name": "dist-wait", "workers": 2, "cpus_per_worker": 0.5}
    waiter = submit(s2, wait)
    waiting = wait_for("W's waiting event", lambda: kinds(events(s2, waiter["id"]), "waiting"), 30)
    assert "waiting for room on the Ray cluster" in waiting[0]["reason"], waiting
    queued = s2.get(f"/api/v1/jobs/{waiter['id']}").json()
    assert queued["state"] == "queued" and "needs 2 worker(s) of 0.5 CPU" in queued["progress"]["waiting"], queued
    assert s2.post(f"/api/v1/jobs/{waiter['id']}/cancel").json()["state"] == "cancelled"
    assert kinds(events(s2, waiter["id"]), "placed") == []  # it never ran


def test_kill_9_of_a_worker_in_epoch_3_restarts_the_workers_from_the_last_checkpoint(topology: Topology) -> None:
    s1, job = topology["s1"], state["B"]
    wait_for("B's checkpoint of epoch 2", lambda: 2 in _checkpoints(s1, job["id"]), 180, 0.1)
    victim = next(w for w in state["first-workers"] if w["rank"] == 1)
    os.kill(int(victim["pid"]), signal.SIGKILL)  # a Ray Train worker process, in the middle of epoch 3
    state["worker-killed-after"] = max(_checkpoints(s1, job["id"]))
    state["second-workers"] = wait_for("B's workers again", lambda: _workers(s1, job["id"], after=2), 180)
    resumed = wait_for("B's resume", lambda: kinds(events(s1, job["id"]), "resumed"), 60)
    # Ray Train's last committed checkpoint: the last one reported, or the one before when the kill came before its
    # controller took that one in (at its next poll of the workers). Never from scratch.
    assert resumed[0]["source"] == "ray-train", resumed
    killed_after = state["worker-killed-after"]
    assert max(1, killed_after - 1) <= resumed[0]["from_epoch"] <= killed_after + 1, (resumed, state)
    assert resumed[0]["next_epoch"] == resumed[0]["from_epoch"] + 1


def test_a_restart_of_the_job_s_server_resumes_it_from_its_checkpoint_in_the_artifact_store(
    topology: Topology,
) -> None:
    s1, job = topology["s1"], state["B"]
    wait_for("B's checkpoint of epoch 4", lambda: 4 in _checkpoints(s1, job["id"]), 180, 0.1)
    state["server-killed-after"] = max(_checkpoints(s1, job["id"]))
    os.kill(topology.pid("s1"), signal.SIGKILL)
    topology.restart("s1", scaled(120))
    # Ray ended the job's actor with the server that owned it, the job's child (the Ray Train driver) went with it,
    # and Ray ended the actors that driver owned: B's workers are gone, as after a cancel or a timeout.
    workers = state["second-workers"]
    wait_for("B's workers to end", lambda: not any(Path(f"/proc/{w['pid']}").exists() for w in workers), 60)


def test_the_job_finishes_once_with_the_accuracy_of_a_one_worker_job(topology: Topology) -> None:
    s1, job = topology["s1"], state["B"]
    done = finished_job(s1, job["id"])
    trail = events(s1, job["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 2, (done, trail)
    resumed = kinds(trail, "resumed")
    assert [r["source"] for r in resumed] == ["ray-train", "artifact-store"], resumed
    # The second attempt started from the last checkpoint the server had kept (one more may have landed as it died).
    killed_after = state["server-killed-after"]
    assert resumed[1]["from_epoch"] in (killed_after, killed_after + 1), (resumed, state)
    epochs = kinds(trail, "epoch")
    assert epochs[-1]["epoch"] == 6, epochs
    # An epoch done again is the epoch it replaces, exactly: the same state, rows and shuffle give the same loss.
    by_epoch: dict[int, list[float]] = {}
    for event in epochs:
        by_epoch.setdefault(event["epoch"], []).append(event["loss"])
    assert all(len(set(losses)) == 1 for losses in by_epoch.values()), by_epoch
    assert done["metrics"]["accuracy"] >= 0.97, done["metrics"]
    versions = s1.get("/api/v1/models/dist-cnn/versions").json()
    assert [v["version"] for v in versions["versions"]] == [done["version"]], versions
    # Ray's own record (its GCS actor table, which keeps ended actors): B's first Train worker actors, by the pids
    # they reported, ran on the nodes they reported: both nodes of the cluster.
    actors = {a["pid"]: a["node"] for a in train_actors(topology)}
    first = state["first-workers"]
    assert {actors.get(w["pid"]) for w in first} == {w["node"] for w in first}, (first, actors)
    print(f"\n[distributed] B resumed {resumed}; accuracy {done['metrics']['accuracy']:.3f}")
