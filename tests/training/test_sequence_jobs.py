"""rnn and transformer jobs on a real server, tiny configurations: text served through the tokenizer pipeline over
V2 (BYTES) and V1 answers what the job's evaluation says; an NPZ [n, time, features] and a CSV column of ragged
lists train and serve; a dataset whose sequences run over the server's limit, and malformed lists, are 4xx.
All jobs are submitted at once by the module's fixture (two job slots) and share one server."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from conftest import LiveServer, scaled, start_server
from stratus import Client
from stratus.compress.corpus import module_family_task
from stratus.errors import InvalidInput
from stratus.sdk.jobs import Job
from stratus.training.worker import split

#: The server's sequence limit in this module: the ragged CSV's longest sequence (14) fits, the long one's does not.
LIMIT = 16
TINY = {"epochs": 3, "embedding_dim": 16, "hidden_size": 16, "batch_size": 16, "dropout": 0.0}
TEXT = {**TINY, "max_length": 32, "lr": 0.01}


def _numeric(rng: np.random.Generator, rows: int, lengths: tuple[int, int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Sequences whose class is whether they trend upwards: order matters, the values alone do not tell."""
    y = rng.integers(0, 2, rows)
    sequences = []
    for label in y:
        steps = int(rng.integers(*lengths))
        trend = np.linspace(0, 1, steps) * (1 if label else -1)
        sequences.append(np.stack([trend + rng.normal(0, 0.2, steps), rng.normal(0, 1, steps)], axis=1))
    return sequences, y


def _csv(sequences: list[np.ndarray], y: np.ndarray) -> bytes:
    lines = ["series,label"] + [f'"{np.round(s, 3).tolist()}",{"up" if t else "down"}' for s, t in zip(sequences, y)]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"STRATUS_JOB_THREADS": "1", "STRATUS_JOB_SLOTS": "2", "STRATUS_SEQUENCE_MAX_LENGTH": str(LIMIT)}
    server = start_server(tmp_path_factory.mktemp("sequence") / "home", None, env=env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.admin_key) as c:
        yield c


@pytest.fixture(scope="module")
def jobs(client: Client) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    task = module_family_task(per_family=16)
    client.upload_dataset("docs", task.csv(), target="family")
    sequences, y = _numeric(rng, 120, (4, 15))
    client.upload_dataset("ragged", _csv(sequences, y), target="label")
    fixed, y_fixed = _numeric(rng, 120, (10, 11))
    buffer = io.BytesIO()
    np.savez(buffer, X=np.stack(fixed), y=y_fixed)
    client.upload_dataset("fixed", buffer.getvalue())
    submitted = {
        "rnn-text": client.train("docs", "rnn", params={**TEXT, "bidirectional": True}, wait=False),
        "transformer-text": client.train("docs", "transformer", params={**TEXT, "heads": 2}, wait=False),
        "rnn-csv": client.train("ragged", "rnn", params={**TINY, "rnn_cell": "gru", "bidirectional": True}, wait=False),
        "transformer-npz": client.train("fixed", "transformer", params={**TINY, "heads": 2}, wait=False),
    }
    done = {name: job.wait(timeout_s=scaled(120)) for name, job in submitted.items()}
    return {"jobs": done, "task": task, "ragged": (sequences, y), "fixed": (np.stack(fixed), y_fixed)}


def _evaluation(client: Client, job: Job) -> list[int]:
    path = f"/api/v1/models/{job.model}/versions/{job.version}/files/evaluation.json"
    predictions: list[int] = client.request("GET", path).json()["test_predictions"]
    return predictions


@pytest.mark.parametrize("name", ["rnn-text", "transformer-text"])
def test_text_is_served_raw_over_v2_and_v1_as_the_job_evaluated_it(
    name: str, jobs: dict[str, Any], client: Client, server: LiveServer
) -> None:
    job: Job = jobs["jobs"][name]
    version = client.get_version(job.model, job.version)  # type: ignore[arg-type]
    assert version["format"] == "pipeline" and {"tokenizer.json", "classifier.onnx"} <= set(version["files"])
    assert version["params"]["trainer"] == name.split("-")[0]
    _, _, test_texts, _ = jobs["task"].split(0.25, 0)  # the job's own held-out rows
    evaluation = _evaluation(client, job)
    assert len(evaluation) == len(test_texts) and 0 <= job.metrics["accuracy"] <= 1
    url = f"{server.url}/v2/models/{job.model}/versions/{job.version}/infer"
    body = {"inputs": [{"name": "text", "shape": [len(test_texts)], "datatype": "BYTES", "data": test_texts}]}
    r = server.post(url, json=body)
    assert r.status_code == 200, r.text
    assert next(o for o in r.json()["outputs"] if o["name"] == "label")["data"] == evaluation
    # V1, a few texts a request: each batch is padded to its own longest text, and the answers stay the same.
    v1 = []
    for start in range(0, len(test_texts), 7):
        chunk = test_texts[start : start + 7]
        r = server.post(f"{server.url}/v1/models/{job.model}/versions/{job.version}:predict", json={"instances": chunk})
        assert r.status_code == 200, r.text
        v1 += [p["label"] for p in r.json()["predictions"]]
    assert v1 == evaluation


def test_a_ragged_csv_list_column_trains_and_each_sequence_is_served_at_its_own_length(
    jobs: dict[str, Any], client: Client, server: LiveServer
) -> None:
    job: Job = jobs["jobs"]["rnn-csv"]
    sequences, y = jobs["ragged"]
    _, test_rows, _, _ = split(np.arange(len(y)), y, 0.25, 0, True)
    evaluation = _evaluation(client, job)
    assert len(evaluation) == len(test_rows)
    version = client.get_version(job.model, job.version)  # type: ignore[arg-type]
    assert version["signature"]["inputs"][0]["shape"] == [-1, -1, 2]
    # One sequence a request, unpadded, over V2 JSON: the job evaluated them NaN-padded in one batch.
    served = []
    for row in test_rows[:12]:
        sequence = np.round(sequences[row], 3).astype(np.float32)
        tensor = {"name": "input", "shape": [1, *sequence.shape], "datatype": "FP32", "data": sequence.ravel().tolist()}
        r = server.post(f"{server.url}/v2/models/{job.model}/versions/{job.version}/infer", json={"inputs": [tensor]})
        assert r.status_code == 200, r.text
        served += next(o for o in r.json()["outputs"] if o["name"] == "label")["data"]
    assert served == evaluation[:12]


def test_an_npz_of_time_and_features_trains_and_serves(jobs: dict[str, Any], client: Client) -> None:
    job: Job = jobs["jobs"]["transformer-npz"]
    X, y = jobs["fixed"]
    _, test_rows, _, y_test = split(np.arange(len(y)), y, 0.25, 0, True)
    evaluation = _evaluation(client, job)
    assert job.metrics["accuracy"] == pytest.approx(float((np.array(evaluation) == y_test).mean()))
    served = client.predict(job.model, X[test_rows].astype(np.float32))  # type: ignore[arg-type]
    assert served["label"].tolist() == evaluation
    shorter = client.predict(job.model, X[test_rows][:, :5].astype(np.float32))  # type: ignore[arg-type]
    assert shorter["label"].shape == (len(test_rows),)  # another length than the training's 10 steps


def test_sequences_over_the_limit_and_malformed_lists_are_4xx(jobs: dict[str, Any], client: Client) -> None:
    rng = np.random.default_rng(1)
    long, y = _numeric(rng, 30, (3, LIMIT + 10))
    long[0] = np.zeros((LIMIT + 9, 2))  # sure to be over the limit
    client.upload_dataset("long", _csv(long, y), target="label")  # a valid dataset...
    with pytest.raises(InvalidInput, match=rf"ragged\).*limit of {LIMIT} steps.*STRATUS_SEQUENCE_MAX_LENGTH"):
        client.train("long", "rnn", wait=False)  # ...that the sequence trainers refuse at submit
    with pytest.raises(InvalidInput, match="sequence column: use the rnn or transformer"):
        client.train("ragged", "mlp", wait=False)
    with pytest.raises(InvalidInput, match=r"CSV line 3.*not a JSON list"):
        client.upload_dataset("broken", b'series,label\n"[1, 2]",a\n"[1, 2,]",b\n"[3]",a\n', target="label")
    with pytest.raises(InvalidInput, match="features per time step"):
        client.upload_dataset("mixed", b'series,label\n"[1, 2]",a\n"[[1, 2], [3, 4]]",b\n', target="label")
    with pytest.raises(InvalidInput, match="multiple of heads"):
        client.train("docs", "transformer", params={"embedding_dim": 18, "heads": 4}, wait=False)
