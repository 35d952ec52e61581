"""Personalization over a real server: one tiny job in project alpha, then what it must show. The report's
figures are recomputed from what the server serves; another project (beta, and the default project's admin)
gets 404 for the personalized model on every route; the base `minilm` answers bit-identically; unusable data
is refused at submit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai import NotFoundError, OpenAI
from personalize_helpers import PARAMS, csv_bytes, pairs_csv

from conftest import LiveServer, bearer, run_cli, scaled, start_server
from stratus import Client
from stratus.cli.personalize import render_report
from stratus.personalize.data import read
from stratus.personalize.worker import Judge

pytestmark = pytest.mark.slow

NAME = "minilm-alpha"
PROBE = ["Stratus serves sentence embeddings.", "zorblat is down again", "an outage of the payment service"]


def _openai(server: LiveServer, key: str) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/openai/v1", api_key=key, max_retries=0, timeout=scaled(30))


def _embed(client: OpenAI, model: str, texts: list[str]) -> np.ndarray:
    response = client.embeddings.create(model=model, input=texts)
    return np.array([d.embedding for d in response.data], dtype=np.float32)


@pytest.fixture(scope="module")
def world(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    # One thread for the job's child, as every torch test: the suite's other worker has the other core.
    home = tmp_path_factory.mktemp("personalize") / "home"
    server = start_server(home, sample_cache, env={"STRATUS_JOB_THREADS": "1"})
    try:
        keys = {}
        for project in ("alpha", "beta"):
            assert server.post(f"{server.url}/api/v1/projects", json={"name": project}).status_code == 201
            r = server.post(f"{server.url}/api/v1/keys", json={"scopes": ["manage"], "project": project})
            keys[project] = r.json()["key"]
        admin = _openai(server, server.admin_key)
        base_before = _embed(admin, "minilm", PROBE)
        alpha = Client(server.url, api_key=keys["alpha"], timeout=scaled(30))
        alpha.upload_dataset("pairs", pairs_csv(), format="csv")
        job = alpha.personalize("pairs", name=NAME, params=PARAMS, timeout_s=int(scaled(200)))
        yield {"server": server, "keys": keys, "job": job, "alpha": alpha, "base_before": base_before}
        alpha.close()
    finally:
        server.stop()


def test_report_compares_base_and_personalized_as_served(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    job, server = world["job"], world["server"]
    report = job.metrics
    assert job.state == "succeeded" and job.version == 1
    assert report["mode"] == "pairs" and report["metric"] == "recall@10" and report["base_model"] == "minilm"
    assert report["personalized"] > report["base"], report
    assert report["personalized_recall@1"] > report["base_recall@1"], report
    # The same figures from what the server serves: the personalized model through this project's OpenAI route,
    # the base through the default project's minilm. (A near-tie may rank one held-out query differently.)
    examples = read(pairs_csv(), "pairs", mode=None, held_out=0.2, seed=0)
    judge = Judge(examples)
    assert report["held_out"] == len(examples.held_out) and report["train"] == len(examples.train)
    served = judge.score(_embed(_openai(server, world["keys"]["alpha"]), NAME, judge.texts))["recall@10"]
    base = judge.score(_embed(_openai(server, server.admin_key), "minilm", judge.texts))["recall@10"]
    tolerance = 1.0 / len(examples.held_out) + 1e-9
    assert abs(served - report["personalized"]) <= tolerance and abs(base - report["base"]) <= tolerance
    # The report is kept with the version too, with the lineage of the data and the base.
    alpha = bearer(world["keys"]["alpha"])
    version = server.get(f"{server.url}/api/v1/models/{NAME}/versions/1", headers=alpha).json()
    assert version["metrics"]["personalized"] == report["personalized"]
    assert version["params"]["base"] == "minilm" and version["lineage"]["source"] == "personalize:minilm"
    assert version["lineage"]["dataset"].startswith("pairs@")
    stored = server.get(f"{server.url}/api/v1/models/{NAME}/versions/1/files/personalize-report.json", headers=alpha)
    assert stored.status_code == 200 and stored.json()["improvement"] == report["improvement"]
    # What `stratus personalize --wait` prints once the job has ended.
    render_report(job.data)
    printed = capsys.readouterr().out
    assert "recall@10" in printed and "recall@1" in printed and f"as {NAME} version 1" in printed


def test_another_project_gets_404_on_every_route(world: dict[str, Any]) -> None:
    server = world["server"]
    text = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["zorblat is down"]}]}
    routes = [
        ("GET", f"/api/v1/models/{NAME}", None),
        ("GET", f"/api/v1/models/{NAME}/versions", None),
        ("GET", f"/api/v1/models/{NAME}/versions/1", None),
        ("GET", f"/api/v1/models/{NAME}/versions/1/files/personalize-report.json", None),
        ("GET", f"/api/v1/models/{NAME}/versions/1/artifact", None),
        ("GET", f"/v2/models/{NAME}", None),
        ("POST", f"/v2/models/{NAME}/infer", text),
        ("POST", f"/v1/models/{NAME}:predict", {"instances": ["zorblat is down"]}),
        ("GET", f"/openai/v1/models/{NAME}", None),
        ("POST", "/openai/v1/embeddings", {"model": NAME, "input": "zorblat is down"}),
        ("GET", f"/api/v1/jobs/{world['job'].id}", None),
        ("POST", f"/api/v1/models/{NAME}/versions/1/compress", {"methods": ["quantize-dynamic"]}),
    ]
    outsiders = {"beta": bearer(world["keys"]["beta"]), "default admin": server.headers}
    for who, headers in outsiders.items():
        for method, path, body in routes:
            status = server.request(method, f"{server.url}{path}", headers=headers, json=body).status_code
            assert status == 404, (who, method, path, status)
        listed = server.get(f"{server.url}/api/v1/models", headers=headers).json()["models"]
        assert NAME not in {m["name"] for m in listed}
        assert NAME not in {
            m["id"] for m in server.get(f"{server.url}/openai/v1/models", headers=headers).json()["data"]
        }
    with pytest.raises(NotFoundError):
        _openai(server, world["keys"]["beta"]).embeddings.create(model=NAME, input="zorblat is down")
    # Nor can another project personalize from alpha's data.
    r = server.post(
        f"{server.url}/api/v1/personalize", headers=outsiders["beta"], json={"dataset": "pairs", "name": "stolen"}
    )
    assert r.status_code == 404
    # The owner serves it on V2 too, and lists it among its OpenAI models.
    alpha = bearer(world["keys"]["alpha"])
    assert server.post(f"{server.url}/v2/models/{NAME}/infer", headers=alpha, json=text).status_code == 200
    assert NAME in {m["id"] for m in server.get(f"{server.url}/openai/v1/models", headers=alpha).json()["data"]}


def test_base_minilm_answers_exactly_as_before(world: dict[str, Any]) -> None:
    server = world["server"]
    after = _embed(_openai(server, server.admin_key), "minilm", PROBE)
    assert np.array_equal(after, world["base_before"])
    assert [v["version"] for v in server.get(f"{server.url}/api/v1/models/minilm/versions").json()["versions"]] == [1]
    tuned = _embed(_openai(server, world["keys"]["alpha"]), NAME, PROBE)
    assert not np.allclose(tuned, after, atol=1e-3)  # the personalized model is another model


def test_unusable_data_is_refused_at_submit(world: dict[str, Any]) -> None:
    server, alpha = world["server"], world["alpha"]
    headers = bearer(world["keys"]["alpha"])
    alpha.upload_dataset("numbers", csv_bytes([[str(i), str(i * 2)] for i in range(30)], ["a", "b"]), format="csv")
    same = csv_bytes([["the same words", "the same words"]] * 3 + [["one", "two"]], ["anchor", "positive"])
    alpha.upload_dataset("same", same, format="csv")
    cases = [
        ({"dataset": "numbers"}, "has no pairs and no labels"),
        ({"dataset": "same"}, "1 usable pairs"),
        ({"dataset": "pairs", "name": "minilm"}, "name of its own"),
        ({"dataset": "pairs", "base": "bert-large"}, "base"),
        ({"dataset": "pairs", "params": {"steps": 0}}, "steps"),
        ({"dataset": "pairs", "params": {"mode": "labels"}}, "no text,label columns"),
        ({"dataset": "ghost"}, "does not exist"),
    ]
    for body, message in cases:
        r = server.post(f"{server.url}/api/v1/personalize", headers=headers, json=body)
        assert r.status_code == (404 if body["dataset"] == "ghost" else 400), (body, r.text)
        assert message in r.json()["error"], (body, r.text)
    # The CLI says the same and exits 1, with no job queued.
    key = world["keys"]["alpha"]
    result = run_cli("--api-key", key, "personalize", "minilm", "--dataset", "numbers", url=server.url, check=False)
    assert result.returncode == 1 and "no pairs and no labels" in result.stdout + result.stderr
    assert [j["kind"] for j in server.get(f"{server.url}/api/v1/jobs", headers=headers).json()["jobs"]] == [
        "personalize"
    ]


# -- fine_tune: MiniLM with a classification head, through a training job on the same server ----------------------


def _reviews(rows: int) -> tuple[bytes, list[str], list[str]]:
    rng = np.random.default_rng(1)
    good = ["great", "wonderful", "excellent", "loved", "brilliant", "delightful"]
    bad = ["awful", "terrible", "boring", "hated", "dreadful", "dull"]
    filler = ["the", "film", "was", "really", "quite", "plot", "acting", "and", "a", "story"]
    texts, labels = [], []
    for i in range(rows):
        positive = i % 2 == 0
        words = [*rng.choice(filler, size=6), *rng.choice(good if positive else bad, size=2)]
        rng.shuffle(words)
        texts.append(f"{' '.join(words)} #{i}")
        labels.append("pos" if positive else "neg")
    return (
        csv_bytes([[t, label] for t, label in zip(texts, labels, strict=True)], ["review", "sentiment"]),
        texts,
        labels,
    )


@pytest.fixture(scope="module")
def fine_tuned(world: dict[str, Any]) -> dict[str, Any]:
    server = world["server"]
    data, texts, labels = _reviews(24)
    with Client(server.url, api_key=server.admin_key, timeout=scaled(30)) as client:
        client.upload_dataset("reviews", data, target="sentiment")
        job = client.train("reviews", "fine_tune", params={"epochs": 1, "batch_size": 16, "max_length": 32})
    return {"job": job, "texts": texts, "labels": labels}


def test_fine_tune_serves_tokenizer_encoder_head_as_evaluated(
    world: dict[str, Any], fine_tuned: dict[str, Any]
) -> None:
    from stratus.training.worker import split

    server, job = world["server"], fine_tuned["job"]
    assert job.state == "succeeded" and 0.0 <= job.metrics["accuracy"] <= 1.0
    version = server.get(f"{server.url}/api/v1/models/{job.model}/versions/{job.version}").json()
    assert version["format"] == "pipeline" and version["lineage"]["source"] == "trainer:fine_tune"
    assert {"tokenizer.json", "encoder.onnx", "head.onnx", "evaluation.json"} <= set(version["files"])
    spec = server.get(f"{server.url}/api/v1/models/{job.model}/versions/{job.version}/artifact").json()
    assert [s["op"] for s in spec["steps"]] == ["tokenize", "onnx", "mean_pool", "onnx"]
    # The held-out texts, split as the job split them; raw text in through V2 BYTES and V1 gives the job's answers.
    y = np.array([["neg", "pos"].index(label) for label in fine_tuned["labels"]])
    _, test_rows, _, _ = split(np.arange(len(y)), y, 0.25, 0, True)
    held_out = [fine_tuned["texts"][i] for i in test_rows]
    evaluation = server.get(f"{server.url}/api/v1/models/{job.model}/versions/{job.version}/files/evaluation.json")
    expected = evaluation.json()["test_predictions"]
    body = {"inputs": [{"name": "text", "shape": [len(held_out)], "datatype": "BYTES", "data": held_out}]}
    r = server.post(f"{server.url}/v2/models/{job.model}/infer", json=body)
    assert r.status_code == 200, r.text
    assert next(o for o in r.json()["outputs"] if o["name"] == "label")["data"] == expected
    r = server.post(f"{server.url}/v1/models/{job.model}:predict", json={"instances": held_out})
    assert r.status_code == 200, r.text
    assert [p["label"] for p in r.json()["predictions"]] == expected


def test_fine_tune_refuses_what_it_cannot_train(world: dict[str, Any], fine_tuned: dict[str, Any]) -> None:
    server = world["server"]
    with Client(server.url, api_key=server.admin_key, timeout=scaled(30)) as client:
        client.upload_dataset("numeric", csv_bytes([[str(i), str(i % 2)] for i in range(20)], ["x", "y"]), target="y")
    cases = [
        ({"dataset": "numeric", "model": "fine_tune"}, "exactly one free-text column"),
        ({"dataset": "reviews", "model": "fine_tune", "params": {"max_length": 1000}}, "at most 512 tokens"),
        ({"dataset": "reviews", "model": "fine_tune", "workers": 2}, "cannot train data-parallel"),
    ]
    for body, message in cases:
        r = server.post(f"{server.url}/api/v1/jobs", json=body)
        assert r.status_code == 400 and message in r.json()["error"], (body, r.text)
