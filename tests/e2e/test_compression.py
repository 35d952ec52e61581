"""Compression end to end on a real server with the bundled samples: the CLI, the SDK and the API, jobs in
child processes, variants registered with lineage, the report and its plot, the alias promotion."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from conftest import LiveServer, run_cli, scaled, start_server
from stratus import Client
from stratus.compress.corpus import split as corpus_split
from stratus.compress.evaluate import embedding_quality, top_k
from stratus.runtime.pipeline import PipelineRunner, PipelineSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("compress") / "home", sample_cache, env={"STRATUS_JOB_THREADS": "2"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.admin_key) as c:
        yield c


def digits_test_split() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    _, X_test, _, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    return (X_test / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), y_test


def test_digits_three_methods_promote_the_fastest_within_budget(server: LiveServer) -> None:
    before = server.get(f"{server.url}/api/v1/models/digits").json()["versions"]
    # The command; shorter timing phases keep the suite short (docs/compression.md has full ones).
    out = run_cli(
        "compress", "digits", "--method", "quantize-static,prune,distill", "--accuracy-budget", "1%",
        "--promote", "production", "--wait", "--timing-seconds", "0.3", url=server.url,
    )  # fmt: skip
    assert "recommendation:" in out.stdout and "quantize-static" in out.stdout and "prune" in out.stdout
    jobs = json.loads(run_cli("jobs", "list", "--json", url=server.url).stdout)
    job = next(j for j in jobs if j["kind"] == "compress")
    report = job["metrics"]
    assert job["state"] == "succeeded"
    versions = server.get(f"{server.url}/api/v1/models/digits").json()
    made = sorted(set(versions["versions"]) - set(before))
    assert made == sorted(report["versions"]) and len(made) == 3
    rows = {row["method"]: row for row in report["variants"]}
    parent_accuracy = report["parent"]["quality"]["accuracy"]
    # The quality targets: static int8 within 1 point, structured pruning at 50% within 2 points.
    assert parent_accuracy - rows["quantize-static"]["quality"]["accuracy"] <= 0.01
    assert parent_accuracy - rows["prune"]["quality"]["accuracy"] <= 0.02
    assert rows["prune"]["recipe"]["units_after"] == rows["prune"]["recipe"]["units_before"] // 2
    assert rows["quantize-static"]["size_bytes"] < report["parent"]["size_bytes"] / 2

    # The recommendation is the fastest within budget, and the alias points at it.
    eligible = [r for r in report["variants"] if r["quality_drop"] <= 0.01]
    fastest = max(eligible, key=lambda r: r["throughput_batch32"])
    if fastest["throughput_batch32"] > report["parent"]["throughput_batch32"]:
        assert report["recommendation"]["version"] == fastest["version"]
        assert versions["aliases"]["production"] == fastest["version"]
    else:
        assert report["recommendation"] is None

    # Lineage on every variant, and its metrics are the report's.
    for method, row in rows.items():
        info = server.get(f"{server.url}/api/v1/models/digits/versions/{row['version']}").json()
        lineage = info["lineage"]
        assert lineage["parent_version"] == 1 and lineage["source"] == f"compress:{method}"
        assert lineage["method"] == method and lineage["method_params"] == row["params"]
        assert info["params"]["compression_method"] == method and info["params"]["job_id"] == job["id"]
        assert info["metrics"]["accuracy"] == row["quality"]["accuracy"]
        assert {"compression-report.json", "compression-report.png"} <= set(info["files"])

    plot = server.get(f"{server.url}/api/v1/models/digits/versions/{made[0]}/files/compression-report.png")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")

    # V2 through the alias serves the promoted version, with the accuracy its report states.
    X_test, y_test = digits_test_split()
    alias = versions["aliases"].get("production", 1)
    body = {
        "inputs": [{"name": "input", "shape": list(X_test.shape), "datatype": "FP32", "data": X_test.ravel().tolist()}],
        "outputs": [{"name": "label"}],
    }
    r = server.post(f"{server.url}/v2/models/digits/infer", json=body, timeout=scaled(60))
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == str(alias)
    labels = np.array(r.json()["outputs"][0]["data"])
    served_row = next((row for row in report["variants"] if row["version"] == alias), report["parent"])
    assert float((labels == y_test).mean()) == pytest.approx(served_row["quality"]["accuracy"], abs=1e-9)


def test_minilm_int8_meets_the_quality_target_and_reproduces(server: LiveServer) -> None:
    # The command; shorter timing phases keep the suite short (the speed target is benchmarked).
    out = run_cli(
        "compress", "minilm", "--method", "quantize-dynamic", "--wait", "--json", "--timing-seconds", "0.3",
        url=server.url,
    )  # fmt: skip
    job = json.loads(out.stdout)
    assert job["state"] == "succeeded", job["error"]
    row = job["metrics"]["variants"][0]
    recipe = row["recipe"]
    assert recipe["per_channel"] is True and recipe["op_types_to_quantize"] == ["MatMul"]
    # Smoothed on the corpus's training sentences; the feed-forward outputs that stay spiky stay fp32.
    assert recipe["smooth_alpha"] == 0.8 and recipe["kept_fp32_for_outliers"]
    assert all("/output/dense/MatMul" in name for name in recipe["kept_fp32_for_outliers"])
    # The quality targets (its speed target is measured by benchmarks/compression.py).
    quality = row["quality"]
    assert quality["mean_cosine"] >= 0.99 and quality["min_cosine"] >= 0.98 and quality["top10_agreement"] >= 0.95
    assert row["size_bytes"] < job["metrics"]["parent"]["size_bytes"]

    # Measured again here, independently of the job: the same embeddings, the same figures.
    version = row["version"]
    spec = server.get(f"{server.url}/api/v1/models/minilm/versions/{version}/artifact").content
    files = {
        name: server.get(f"{server.url}/api/v1/models/minilm/versions/{version}/files/{name}").content
        for name in ("encoder.onnx", "tokenizer.json")
    }
    parent_files = {
        name: server.get(f"{server.url}/api/v1/models/minilm/versions/1/files/{name}").content
        for name in ("encoder.onnx", "tokenizer.json")
    }
    _, held_out = corpus_split(limit_held_out=job["metrics"]["evaluation_rows"])
    texts = np.array(held_out, dtype=object)

    def embed(parts: dict[str, bytes]) -> np.ndarray:
        runner = PipelineRunner(PipelineSpec.parse(spec), parts.__getitem__, lambda ref: b"", threads=2)
        batches = [runner.run_checked({"text": texts[i : i + 64]})["embedding"] for i in range(0, len(texts), 64)]
        return np.concatenate(batches)

    parent = embed(parent_files)
    variant = embed(files)
    ours = embedding_quality(variant, parent, top_k(parent))
    for key, value in row["quality"].items():
        assert ours[key] == pytest.approx(value, rel=0.10), key

    # The variant serves through V2 like its parent. Dynamic int8 scales activations per batch, so a sentence
    # alone is compared with the same sentence alone.
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [held_out[0]]}]}
    r = server.post(f"{server.url}/v2/models/minilm/versions/{version}/infer", json=body, timeout=scaled(60))
    assert r.status_code == 200, r.text
    served = next(o for o in r.json()["outputs"] if o["name"] == "embedding")
    alone = PipelineRunner(PipelineSpec.parse(spec), files.__getitem__, lambda ref: b"", threads=2)
    expected = alone.run_checked({"text": texts[:1]})["embedding"][0]
    assert np.allclose(np.array(served["data"]), expected, atol=1e-5)


def test_the_sdk_compresses_and_a_failed_job_leaves_no_version(server: LiveServer, client: Client) -> None:
    before = server.get(f"{server.url}/api/v1/models/iris").json()["versions"]
    job = client.compress("iris", 1, methods=["optimize", "fp16"], accuracy_budget=0.02, timing_seconds=0.2)
    assert job.state == "succeeded"
    assert {row["method"] for row in job.metrics["variants"]} == {"optimize", "fp16"}
    for row in job.metrics["variants"]:
        assert row["quality"]["accuracy"] == job.metrics["parent"]["quality"]["accuracy"]
    middle = server.get(f"{server.url}/api/v1/models/iris").json()["versions"]
    assert len(middle) == len(before) + 2

    failed = client.compress("iris", 1, methods=["quantize-dynamic"], timeout_s=1, wait=False)
    failed = failed.wait(timeout_s=scaled(120), raise_on_failure=False)
    assert failed.state == "failed" and "timed out" in failed.error
    assert server.get(f"{server.url}/api/v1/models/iris").json()["versions"] == middle


def test_a_version_trained_by_stratus_keeps_its_graph_and_compresses_on_its_dataset(
    server: LiveServer, client: Client
) -> None:
    r = server.post(f"{server.url}/api/v1/datasets/builtin", json={"name": "wine"})
    assert r.status_code == 201, r.text
    trained = client.train("wine", "mlp", name="wine-mlp", params={"epochs": 30, "hidden": [32]})
    info = server.get(f"{server.url}/api/v1/models/wine-mlp/versions/{trained.version}").json()
    assert {"training-graph.json", "training-weights.npz"} <= set(info["files"])

    job = client.compress(
        "wine-mlp",
        trained.version,
        methods=["prune", "quantize-static"],
        params={"prune": {"finetune_epochs": 5}},
        timing_seconds=0.2,
    )
    report = job.metrics
    assert report["data_source"] == "dataset" and report["evaluation_rows"] == 45  # wine's 25% test split
    # The parent's accuracy on that split is the one its training job measured.
    assert report["parent"]["quality"]["accuracy"] == pytest.approx(trained.metrics["accuracy"])
    pruned = next(r for r in report["variants"] if r["method"] == "prune")
    assert pruned["recipe"]["units_after"] == 16
    again = client.compress(
        "wine-mlp", pruned["version"], methods=["prune"], params={"prune": {"finetune_epochs": 1}}, timing_seconds=0.2
    )
    assert again.metrics["variants"][0]["recipe"]["units_before"] == 16


def test_minilm_distillation_builds_a_shallower_student_that_serves(server: LiveServer, client: Client) -> None:
    """A few steps only: this proves the path (teacher = the served version, student from the best subset of
    its layers, export, evaluation, registration); the quality after a full run is in docs/compression.md."""
    job = client.compress(
        "minilm", 1, methods=["distill"], params={"distill": {"steps": 10}}, accuracy_budget=0.05, timing_seconds=0.2
    )
    row = job.metrics["variants"][0]
    recipe = row["recipe"]
    kept = recipe["teacher_layers_kept"]
    assert recipe["student_layers"] == 4 and len(set(kept)) == 4 and kept == sorted(kept)
    # Every 4-of-6 subset was scored; the first four layers are not the best start on MiniLM.
    assert kept != [0, 1, 2, 3] and 0.5 < recipe["starting_cosine"] < 1.0
    # Then int8 by the dynamic recipe, smoothed on the corpus's training sentences.
    assert recipe["int8"]["smooth_alpha"] == 0.8 and recipe["int8"]["smoothed_matmuls"] > 0
    assert row["size_ratio"] < 0.7  # two of six layers gone, the rest int8; the fp32 embeddings table stays
    assert 0.0 < row["quality"]["mean_cosine"] < 1.0
    body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a student", "of MiniLM"]}]}
    r = server.post(f"{server.url}/v2/models/minilm/versions/{row['version']}/infer", json=body, timeout=scaled(60))
    assert r.status_code == 200, r.text
    embedding = next(o for o in r.json()["outputs"] if o["name"] == "embedding")
    assert embedding["shape"] == [2, 384]
