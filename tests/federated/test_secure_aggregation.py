"""The Flower engine end to end on loopback gRPC: three clients with non-IID digit shards, SecAgg+ on, and what the
server side received checked against what the clients really sent. One module, one federation per mode."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch

from conftest import scaled
from federated.shards import digits, npz_bytes, shard_rows
from stratus.federated import client as fc
from stratus.federated import model as fed
from stratus.federated.relay import RelayGrid, RelayServicer, client_token, serve
from stratus.federated.server import Outcome, run_federation
from stratus.training.params import TrainParams

JOB = "0123456789abcdef0123456789abcdef"
SECRET = b"k" * 32
CLASSES = [str(i) for i in range(10)]


def spec(secure: bool) -> dict[str, Any]:
    params = TrainParams(lr=0.02, batch_size=16, hidden=[32], seed=0)
    return {
        "model": "mlp",
        "features": None,
        "image_shape": [1, 8, 8],
        "classes": CLASSES,
        "params": params.model_dump(),
        "strategy": "fedavg",
        "proximal_mu": 0.0,
        "secure_aggregation": secure,
        "round_timeout_s": scaled(30),
        "rounds": 2,
        "min_clients": 3,
        "local_epochs": 4,
    }


def federate(secure: bool) -> dict[str, Any]:
    """Run one federation; return what the server received, what each client sent, and the raw rows."""
    torch.set_num_threads(1)
    X, y = digits()
    shards = [rows for rows in shard_rows(y, limit=120)]
    received: list[tuple[str, Any]] = []
    sent: dict[str, list[list[np.ndarray]]] = {f"c{i}": [] for i in range(3)}
    grid = RelayGrid(observers=[lambda client, message: received.append((client, message))])
    server, port = serve(RelayServicer(grid, SECRET, JOB))
    job_spec = spec(secure)
    errors: list[BaseException] = []

    def join(i: int) -> None:
        try:
            name = f"c{i}"
            prepared = fc.prepare(npz_bytes(X[shards[i]], y[shards[i]]), "local.npz")
            answer = {
                "client": name,
                "address": f"127.0.0.1:{port}",
                "token": client_token(SECRET, JOB, name),
                "spec": job_spec,
            }
            fc.train_joined(answer, prepared, observe=lambda who, weights: sent[who].append(weights))
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=join, args=(i,), daemon=True) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        outcome = run_federation(job_spec, grid, lambda _event: None, start_timeout=scaled(60))
    finally:
        server.stop(grace=0)
    for thread in threads:
        thread.join(scaled(30))
    assert errors == []
    return {"outcome": outcome, "received": received, "sent": sent, "X": X, "shards": shards, "y": y}


def arrays_in(message: Any) -> list[np.ndarray]:
    content = message.content
    found = []
    for record in content.array_records.values():
        found += [array.numpy().ravel() for array in record.values()]
    return found


def individual_updates_seen(run: dict[str, Any]) -> int:
    """How many arrays the server received that equal (to float precision) a tensor some client trained."""
    seen = 0
    for _client, message in run["received"]:
        for array in arrays_in(message):
            for updates in run["sent"].values():
                for weights in updates:
                    seen += sum(1 for w in weights if w.size == array.size and np.allclose(w.ravel(), array, atol=1e-6))
    return seen


@pytest.fixture(scope="module")
def secure_run() -> dict[str, Any]:
    return federate(secure=True)


def test_three_clients_train_with_secagg_and_report_each_round(secure_run: dict[str, Any]) -> None:
    outcome: Outcome = secure_run["outcome"]
    assert outcome.joined == ["c0", "c1", "c2"]
    assert outcome.dropped == []
    assert [r["round"] for r in outcome.rounds] == [1, 2]
    for entry in outcome.rounds:
        assert set(entry["clients"]) == {"c0", "c1", "c2"}  # each client's held-out accuracy
        assert 0.0 <= entry["val_metric"] <= 1.0 and entry["loss"] > 0
    assert outcome.rounds[-1]["val_metric"] > 0.3  # ten classes: well above chance after two rounds
    assert all(len(updates) == 2 for updates in secure_run["sent"].values())  # every client fitted each round


def test_server_never_receives_an_unmasked_update_or_a_raw_row(secure_run: dict[str, Any]) -> None:
    assert secure_run["received"], "the observer saw nothing: the check below would prove nothing"
    assert individual_updates_seen(secure_run) == 0
    # No raw row either: no received byte string holds any client's row as the float32 bytes it trains on.
    blobs = b"".join(
        a.astype(np.float32).tobytes() for _c, m in secure_run["received"] for a in arrays_in(m)
    ) + b"".join(str(m.content.config_records).encode() for _c, m in secure_run["received"])
    X = secure_run["X"]
    rows = [X[i].astype(np.float32).tobytes() for shard in secure_run["shards"] for i in shard[:40]]
    assert not any(row in blobs for row in rows)
    # What the strategy did get is the sum: the new global weights are the row-weighted mean of the clients' true
    # last updates (to SecAgg+'s quantization).
    final = fed.weights_of(secure_run["outcome"].model)
    counts = [round(len(shard) * 0.75) for shard in secure_run["shards"]]  # the training part of each shard
    last = [updates[-1] for updates in secure_run["sent"].values()]
    for k, tensor in enumerate(final):
        expected = sum(n * w[k] for n, w in zip(counts, last, strict=True)) / sum(counts)
        assert np.allclose(tensor, expected, atol=2e-3), k


def test_the_same_check_sees_updates_when_secure_aggregation_is_off() -> None:
    """The detector above is not blind: without SecAgg+ the server does receive each client's weights."""
    plain = federate(secure=False)
    assert individual_updates_seen(plain) > 0
