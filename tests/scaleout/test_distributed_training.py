"""Data-parallel training on the two-node test cluster (#21): ``workers`` runs a torch trainer as a Ray Train job.

One topology (shared with test_topology.py, which runs after this module) and jobs that overlap in time, so the
checks cost one pass of training, not one each. In order:

1. bad input gets a clear 4xx at submit;
2. job B (digits CNN, 2 workers) on server 2 and job C (digits MLP, 2 workers) on server 1 run their workers on
   both nodes (events, and Ray's own actor table); a third job W waits queued, with the reason, while they fill
   the cluster;
3. kill -9 of one of B's workers in epoch 3: Ray Train restarts its workers from B's last checkpoint;
4. kill -9 of server 1 while C trains, then the same server started again: C is taken over and resumes from its
   checkpoint in the artifact store;
5. B ends with one version and >= 0.97 accuracy; W runs once there is room, and is cancelled: its workers go too;
   C ends with one version.
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
MLP = {"epochs": 10, "batch_size": 16, "lr": 0.003, "seed": 0}
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


def test_two_jobs_run_their_workers_on_both_nodes_and_a_third_waits_queued_with_the_reason(topology: Topology) -> None:
    s1, s2 = topology["s1"], topology["s2"]
    state["B"] = submit(s2, {"dataset": "dist-digits", "model": "cnn", "name": "dist-cnn", "params": CNN, **WORKER})
    state["C"] = submit(
        s1, {"dataset": "dist-digits", "model": "mlp", "name": "dist-mlp", "params": MLP, "retries": 1, **WORKER}
    )
    nodes = {n["id"] for n in topology.ready["ray"]["nodes"]}
    for server, job in ((s2, state["B"]), (s1, state["C"])):
        workers = wait_for(
            f"job {job['id']}'s 2 workers",
            lambda server=server, job=job: (lambda w: w if len(w) >= 2 else None)(
                kinds(events(server, job["id"]), "worker")
            ),
            180,
        )
        assert {w["rank"] for w in workers} == {0, 1} and {w["workers"] for w in workers} == {2}
        assert {w["node"] for w in workers} == nodes, workers  # SPREAD: one worker on each node
        state[f"{job['id']}-workers"] = workers
    # The cluster is full (2 jobs x (0.5 CPU driver + 2 x 0.25)): a third job waits in the queue, saying why.
    state["W"] = submit(
        s2, {"dataset": "dist-digits", "model": "mlp", "name": "dist-wait", "params": {"epochs": 200}, **WORKER}
    )
    waiting = wait_for("the third job's waiting event", lambda: kinds(events(s2, state["W"]["id"]), "waiting"), 30)
    assert "waiting for room on the Ray cluster" in waiting[0]["reason"], waiting
    job = s2.get(f"/api/v1/jobs/{state['W']['id']}").json()
    assert job["state"] == "queued" and "needs 2 worker(s) of 0.25 CPU" in job["progress"]["waiting"], job


def test_kill_9_of_a_worker_in_epoch_3_resumes_from_the_last_checkpoint(topology: Topology) -> None:
    s2, job = topology["s2"], state["B"]
    wait_for(
        "B's checkpoint of epoch 2",
        lambda: 2 in {c["epoch"] for c in kinds(events(s2, job["id"]), "checkpoint")},
        180,
        0.1,
    )
    victim = next(w for w in state[f"{job['id']}-workers"] if w["rank"] == 1)
    os.kill(int(victim["pid"]), signal.SIGKILL)  # a Ray Train worker process, in the middle of epoch 3
    state["B-killed-after"] = max(c["epoch"] for c in kinds(events(s2, job["id"]), "checkpoint"))


def test_a_restarted_server_s_job_resumes_from_its_checkpoint_in_the_artifact_store(topology: Topology) -> None:
    s1, job = topology["s1"], state["C"]
    wait_for(
        "C's checkpoint of epoch 2",
        lambda: 2 in {c["epoch"] for c in kinds(events(s1, job["id"]), "checkpoint")},
        180,
        0.1,
    )
    state["C-checkpoint"] = max(c["epoch"] for c in kinds(events(s1, job["id"]), "checkpoint"))
    os.kill(topology.pid("s1"), signal.SIGKILL)
    topology.restart("s1", scaled(120))


def test_the_job_with_a_killed_worker_finishes_once_with_the_accuracy_of_a_one_worker_job(topology: Topology) -> None:
    s2, job = topology["s2"], state["B"]
    done = finished_job(s2, job["id"])
    trail = events(s2, job["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 1, (done, trail)
    resumed = kinds(trail, "resumed")
    assert len(resumed) == 1 and resumed[0]["source"] == "ray-train", trail
    # It resumed from the last checkpoint Ray Train had committed when the worker died: the last one the job
    # reported (epoch 2), or the one before when the kill came before Ray Train's controller took the last in
    # (it commits a reported checkpoint at its next poll of the workers). Never from scratch.
    killed_after = state["B-killed-after"]
    assert killed_after - 1 <= resumed[0]["from_epoch"] <= killed_after + 1 and resumed[0]["from_epoch"] >= 1
    assert resumed[0]["next_epoch"] == resumed[0]["from_epoch"] + 1
    epochs = kinds(trail, "epoch")
    assert epochs[-1]["epoch"] == 6, epochs
    # A resumed epoch is the epoch it replaces, exactly: the same state, rows and shuffle give the same loss.
    by_epoch: dict[int, list[float]] = {}
    for event in epochs:
        by_epoch.setdefault(event["epoch"], []).append(event["loss"])
    redone = [losses for losses in by_epoch.values() if len(losses) > 1]
    assert all(losses[0] == losses[1] for losses in redone), by_epoch
    assert done["metrics"]["accuracy"] >= 0.97, done["metrics"]
    versions = s2.get("/api/v1/models/dist-cnn/versions").json()
    assert [v["version"] for v in versions["versions"]] == [done["version"]], versions
    # Ray's own record (its GCS actor table, which keeps ended actors): the Train worker actors of B's and C's first
    # workers, by the pids they reported, ran on the nodes they reported: both nodes of the cluster.
    actors = {a["pid"]: a["node"] for a in train_actors(topology)}
    for job in (state["B"], state["C"]):
        reported = state[f"{job['id']}-workers"]
        assert {actors.get(w["pid"]) for w in reported} == {w["node"] for w in reported}, (reported, actors)
        assert len({w["node"] for w in reported}) == 2
    print(f"\n[distributed] B resumed {resumed[0]}; accuracy {done['metrics']['accuracy']:.3f}")


def test_a_waiting_job_runs_when_there_is_room_and_is_cancelled_with_its_workers(topology: Topology) -> None:
    s2, job = topology["s2"], state["W"]
    workers = wait_for(
        "W's 2 workers", lambda: (lambda w: w if len(w) >= 2 else None)(kinds(events(s2, job["id"]), "worker")), 180
    )
    cancelled = s2.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert finished_job(s2, job["id"])["state"] == "cancelled"
    # Ray ended the actors of the killed driver (the job's child): its Train workers are gone.
    wait_for("W's workers to end", lambda: not any(Path(f"/proc/{w['pid']}").exists() for w in workers), 60)
    assert s2.get("/api/v1/models/dist-wait").status_code == 404


def test_the_restarted_server_s_job_finishes_once_from_its_checkpoint(topology: Topology) -> None:
    job = state["C"]
    done = finished_job(topology["s1"], job["id"])
    trail = events(topology["s1"], job["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 2, (done, trail)
    resumed = kinds(trail, "resumed")
    assert [r["source"] for r in resumed] == ["artifact-store"], trail
    # The last checkpoint the server had kept when it was killed (one more may have landed in the last moment).
    assert resumed[0]["from_epoch"] in (state["C-checkpoint"], state["C-checkpoint"] + 1), (resumed, state)
    versions = topology["s1"].get("/api/v1/models/dist-mlp/versions").json()
    assert [v["version"] for v in versions["versions"]] == [done["version"]], versions
    print(f"\n[distributed] C resumed {resumed[0]} after its server's restart")
