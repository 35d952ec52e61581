"""A client killed mid-round (SIGKILL to its process, after it answered the round's first SecAgg+ stage) does not
stop the federation: SecAgg+ removes its masks with the others' shares, the round completes without it, the next
round goes on with the two left, and the job's rounds name it as dropped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conftest import scaled
from federated.shards import digits, npz_bytes, shard_rows
from stratus.federated import client as fc
from stratus.federated.relay import RelayGrid, RelayServicer, client_token, serve
from stratus.federated.server import run_federation
from stratus.training.params import TrainParams

JOB = "fedcba9876543210fedcba9876543210"
SECRET = b"d" * 32

VICTIM = """
import json, sys
from pathlib import Path
from stratus.federated import client as fc
answer = json.loads(Path(sys.argv[1]).read_text())
fc.train_joined(answer, fc.prepare(Path(sys.argv[2]).read_bytes(), "local.npz"))
"""


def test_a_client_killed_mid_round_does_not_stop_the_federation(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    X, y = digits()
    shards = shard_rows(y, limit=60)
    spec: dict[str, Any] = {
        "model": "mlp",
        "features": None,
        "image_shape": [1, 8, 8],
        "classes": [str(i) for i in range(10)],
        "params": TrainParams(lr=0.02, batch_size=16, hidden=[16]).model_dump(),
        "strategy": "fedavg",
        "proximal_mu": 0.0,
        "secure_aggregation": True,
        "round_timeout_s": scaled(30),
        "rounds": 2,
        "min_clients": 3,
        "local_epochs": 1,
    }
    killed = threading.Event()
    victim: dict[str, subprocess.Popen[bytes]] = {}

    answers: list[str] = []

    def kill_mid_round(client: str, message: Any) -> None:
        # The victim's answer to round 1's second SecAgg+ stage (its key shares are out): it dies before it sends its
        # masked update, and the others' shares must remove its masks from the sum.
        if client == "victim" and message.metadata.group_id == "1":
            answers.append(client)
            if len(answers) == 2 and not killed.is_set():
                os.kill(victim["process"].pid, signal.SIGKILL)
                killed.set()

    grid = RelayGrid(node_timeout=scaled(1), observers=[kill_mid_round])
    server, port = serve(RelayServicer(grid, SECRET, JOB))

    def answer(name: str) -> dict[str, Any]:
        token = client_token(SECRET, JOB, name)
        return {"client": name, "address": f"127.0.0.1:{port}", "token": token, "spec": spec}

    (tmp_path / "answer.json").write_text(json.dumps(answer("victim")))
    (tmp_path / "local.npz").write_bytes(npz_bytes(X[shards[2]], y[shards[2]]))
    with (tmp_path / "victim.log").open("wb") as log:
        victim["process"] = subprocess.Popen(
            [sys.executable, "-c", VICTIM, str(tmp_path / "answer.json"), str(tmp_path / "local.npz")],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    errors: list[BaseException] = []

    def join(i: int) -> None:
        try:
            prepared = fc.prepare(npz_bytes(X[shards[i]], y[shards[i]]), "local.npz")
            fc.train_joined(answer(f"c{i}"), prepared)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=join, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        outcome = run_federation(spec, grid, lambda _event: None, start_timeout=scaled(60))
    finally:
        server.stop(grace=0)
        if victim["process"].poll() is None:
            victim["process"].kill()
        victim["process"].wait(scaled(10))
    for thread in threads:
        thread.join(scaled(30))
    assert errors == []
    victim_log = (tmp_path / "victim.log").read_text(errors="replace")[-2000:]
    assert killed.is_set() and victim["process"].returncode == -signal.SIGKILL, victim_log
    assert [r["round"] for r in outcome.rounds] == [1, 2]  # every round completed
    assert set(outcome.rounds[0]["clients"]) == {"c0", "c1"}  # round 1 ended without the victim: it was dead
    assert set(outcome.rounds[1]["clients"]) == {"c0", "c1"}  # and the next round went on with the two left
    assert "victim" in outcome.dropped and outcome.joined == ["c0", "c1", "victim"]
    assert np.isfinite(outcome.rounds[-1]["loss"]) and outcome.rounds[-1]["val_metric"] > 0.2
