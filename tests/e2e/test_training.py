"""The training path end to end on a real server: datasets, jobs in child processes, versions, serving."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

from conftest import LiveServer, run_cli, scaled, start_server
from stratus import Client
from stratus.errors import InvalidInput, StratusError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("train") / "home", None, env={"STRATUS_JOB_THREADS": "2"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.admin_key) as c:
        yield c


def v2_predict(server: LiveServer, model: str, version: int, X: np.ndarray, output: str) -> np.ndarray:
    body = {
        "inputs": [{"name": "input", "shape": list(X.shape), "datatype": "FP32", "data": X.ravel().tolist()}],
        "outputs": [{"name": output}],
    }
    r = server.post(f"{server.url}/v2/models/{model}/versions/{version}/infer", json=body, timeout=scaled(60))
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    return np.array(out["data"]).reshape(out["shape"])


def test_digits_npz_cnn_through_the_cli(server: LiveServer, tmp_path: Path) -> None:
    X, y = load_digits(return_X_y=True)
    npz = tmp_path / "digits.npz"
    np.savez(npz, X=X.reshape(-1, 1, 8, 8), y=y)
    run_cli("datasets", "upload", str(npz), "--name", "digits", url=server.url)
    out = run_cli("train", "--dataset", "digits", "--model", "cnn", "--epochs", "15", "--wait", url=server.url)
    assert "succeeded" in out.stdout and "accuracy" in out.stdout
    job = json.loads(run_cli("jobs", "list", "--json", url=server.url).stdout)[0]
    assert job["state"] == "succeeded" and job["model"] == "digits-cnn"
    assert job["metrics"]["accuracy"] >= 0.97
    version = server.get(f"{server.url}/api/v1/models/digits-cnn/versions/{job['version']}").json()
    assert version["metrics"]["accuracy"] == job["metrics"]["accuracy"]
    assert version["lineage"]["dataset"].startswith("digits@sha256:")
    assert version["params"]["job_id"] == job["id"] and version["params"]["trainer"] == "cnn"
    assert "confusion_matrix.png" in version["files"]
    png = server.get(f"{server.url}/api/v1/models/digits-cnn/versions/{job['version']}/files/confusion_matrix.png")
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    # The served version reproduces what the job reported on the test split, row for row.
    evaluation = server.get(
        f"{server.url}/api/v1/models/digits-cnn/versions/{job['version']}/files/evaluation.json"
    ).json()
    _, X_test, _, y_test = train_test_split(X.reshape(-1, 1, 8, 8), y, test_size=0.25, random_state=0, stratify=y)
    served = v2_predict(server, "digits-cnn", job["version"], X_test.astype(np.float32), "label")
    assert served.tolist() == evaluation["test_predictions"]
    assert float((served == y_test).mean()) == pytest.approx(job["metrics"]["accuracy"])
    logs = run_cli("jobs", "logs", job["id"], url=server.url).stdout
    assert logs.count(" epoch ") == 15


def test_breast_cancer_csv_logistic_regression_with_baked_in_scaling(client: Client, server: LiveServer) -> None:
    data = load_breast_cancer()
    header = ",".join(f"f{i}" for i in range(data.data.shape[1])) + ",diagnosis"
    rows = [",".join(map(str, row)) + f",{'benign' if t else 'malignant'}" for row, t in zip(data.data, data.target)]
    info = client.upload_dataset("cancer", ("\n".join([header, *rows]) + "\n").encode(), target="diagnosis")
    assert info["task"] == "classification" and info["rows"] == 569
    job = client.train("cancer", "logistic_regression", name="cancer-lr")
    assert job.state == "succeeded" and job.metrics["accuracy"] >= 0.95
    # Raw, unscaled features in; the scaler fitted on the training split is inside the ONNX.
    X = data.data[:20].astype(np.float32)
    labels = v2_predict(server, "cancer-lr", job.version, X, "label")  # type: ignore[arg-type]
    assert float((labels == (1 - data.target[:20])).mean()) >= 0.9  # classes sort as benign=0, malignant=1


def test_image_folder_zip_cnn(client: Client) -> None:
    from PIL import Image

    X, y = load_digits(return_X_y=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, (pixels, label) in enumerate(zip(X, y)):
            image = io.BytesIO()
            Image.fromarray((pixels.reshape(8, 8) * 16).clip(0, 255).astype(np.uint8)).save(image, format="PNG")
            archive.writestr(f"digits/{label}/{i}.png", image.getvalue())
    info = client.upload_dataset("digit-images", buffer.getvalue())
    assert info["format"] == "images" and info["schema"]["image"] == {"channels": 1, "height": 8, "width": 8}
    job = client.train("digit-images", "cnn", params={"epochs": 15})
    assert job.metrics["accuracy"] >= 0.95
    # The model resizes inside: it takes images of any size, here the digits at twice the resolution.
    version = client.get_version(job.model, job.version)  # type: ignore[arg-type]
    assert version["signature"]["inputs"][0]["shape"] == [-1, 1, -1, -1]
    images = (X[:200].reshape(-1, 8, 8) * 16).clip(0, 255)
    doubled = np.stack([np.asarray(Image.fromarray(i.astype(np.uint8)).resize((16, 16))) for i in images])
    labels = client.predict(job.model, doubled[:, None].astype(np.float32), version=job.version)["label"]  # type: ignore[arg-type]
    assert float((labels == y[:200]).mean()) >= 0.9


@pytest.mark.parametrize(
    ("builtin", "model", "metric", "bound"),
    [
        ("wine", "decision_tree", "accuracy", 0.8),
        ("wine", "random_forest", "accuracy", 0.9),
        ("wine", "svm", "accuracy", 0.9),
        ("wine", "mlp", "accuracy", 0.9),
        ("diabetes", "linear_regression", "r2", 0.3),
        ("diabetes", "mlp", "r2", 0.2),
    ],
)
def test_each_trainer_family(
    client: Client, server: LiveServer, builtin: str, model: str, metric: str, bound: float
) -> None:
    if builtin not in {d["name"] for d in client.list_datasets()}:
        client.upload_dataset(builtin, builtin=builtin)
    params = {"epochs": 60, "lr": 0.01, "hidden": [32]} if model == "mlp" else {}
    job = client.train(builtin, model, name=f"{builtin}-{model}".replace("_", "-"), params=params)
    assert job.metrics[metric] >= bound, job.metrics
    version = client.get_version(job.model, job.version)  # type: ignore[arg-type]
    assert version["signature"]["inputs"][0]["shape"][1] == (13 if builtin == "wine" else 10)


def test_same_seed_same_metrics(client: Client) -> None:
    if "wine" not in {d["name"] for d in client.list_datasets()}:
        client.upload_dataset("wine", builtin="wine")
    params = {
        "epochs": 10,
        "seed": 3,
        "optimizer": "sgd",
        "momentum": 0.9,
        "nesterov": True,
        "schedule": "cosine",
        "init": "xavier",
        "weight_decay": 1e-4,
        "patience": 5,
    }
    first = client.train("wine", "mlp", name="wine-seed", params=params)
    second = client.train("wine", "mlp", name="wine-seed", params=params)
    assert first.metrics == second.metrics and second.version == first.version + 1  # type: ignore[operator]


def test_bad_requests_are_refused_at_submit(client: Client) -> None:
    if "wine" not in {d["name"] for d in client.list_datasets()}:
        client.upload_dataset("wine", builtin="wine")
    with pytest.raises(InvalidInput, match="image dataset"):
        client.train("wine", "cnn", wait=False)
    with pytest.raises(InvalidInput, match="regression target"):
        client.train("wine", "linear_regression", wait=False)
    with pytest.raises(InvalidInput, match="lr"):
        client.train("wine", "mlp", params={"lr": -1}, wait=False)
    with pytest.raises(InvalidInput, match="epochs"):
        client.train("wine", "mlp", params={"epochs": 0}, wait=False)
    with pytest.raises(StratusError, match="does not exist"):
        client.train("no-such-dataset", "mlp", wait=False)


def test_cancel_takes_effect_at_once_and_registers_nothing(client: Client) -> None:
    if "wine" not in {d["name"] for d in client.list_datasets()}:
        client.upload_dataset("wine", builtin="wine")
    job = client.train("wine", "mlp", name="wine-cancelled", params={"epochs": 1000, "batch_size": 1}, wait=False)
    deadline = time.monotonic() + scaled(30)
    while job.refresh().state != "running" or not job.data["progress"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    job.cancel()
    # Cancelling kills the child's process group before it answers: the job is over when cancel returns.
    assert job.refresh().state == "cancelled"
    with pytest.raises(StratusError, match="does not exist"):
        client.get_model("wine-cancelled")


def test_kill_9_mid_training_fails_the_job_and_leaves_no_version(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_server(home, None)
    with Client(server.url, api_key=server.admin_key) as c:
        c.upload_dataset("wine", builtin="wine")
        job = c.train("wine", "mlp", name="wine-killed", params={"epochs": 1000, "batch_size": 1}, wait=False)
        deadline = time.monotonic() + scaled(30)
        while not job.refresh().data["progress"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    os.kill(server.pid, signal.SIGKILL)
    server.process.wait(timeout=scaled(10))
    server = start_server(home, None)
    try:
        with Client(server.url, api_key=server.admin_key) as c:
            after = c.get_job(job.id)
            assert after.state == "failed" and "server stopped" in after.error
            with pytest.raises(StratusError, match="does not exist"):
                c.get_model("wine-killed")
    finally:
        server.stop()


def test_job_timeout_is_enforced(client: Client) -> None:
    if "wine" not in {d["name"] for d in client.list_datasets()}:
        client.upload_dataset("wine", builtin="wine")
    job = client.train(
        "wine", "mlp", name="wine-slow", params={"epochs": 1000, "batch_size": 1}, timeout_s=3, wait=False
    )
    job.wait(timeout_s=scaled(60), raise_on_failure=False)
    assert job.state == "failed" and "timed out after 3 s" in job.error
    assert job.data["cpu_seconds"] > 0


@pytest.mark.parametrize("trainer", ["logistic_regression", "mlp"])
def test_categorical_columns_are_one_hot_encoded_inside_the_model(
    client: Client, server: LiveServer, trainer: str
) -> None:
    rng = np.random.default_rng(0)
    colours = rng.choice(["red", "green", "blue"], size=400)
    x = rng.normal(size=400)
    label = np.where((colours == "red") | (x > 1.0), "yes", "no")
    lines = ["x,colour,label", *(f"{a:.4f},{c},{t}" for a, c, t in zip(x, colours, label))]
    name = f"colours-{trainer.replace('_', '-')}"
    info = client.upload_dataset(name, ("\n".join(lines) + "\n").encode(), target="label")
    assert [f["kind"] for f in info["schema"]["features"]] == ["numeric", "categorical"]
    assert info["profile"]["features"]["colour"]["distinct"] == 3
    job = client.train(name, trainer, params={"epochs": 40, "lr": 0.01} if trainer == "mlp" else {})
    assert job.metrics["accuracy"] >= 0.9
    version = client.get_version(job.model, job.version)  # type: ignore[arg-type]
    assert version["signature"]["inputs"] == [
        {"name": "numeric", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "categorical", "datatype": "BYTES", "shape": [-1, 1]},
    ]
    # Raw values in, through V1 rows: red is "yes" whatever x is; an unseen colour still answers.
    rows = [
        {"numeric": [0.0], "categorical": ["red"]},
        {"numeric": [-1.0], "categorical": ["blue"]},
        {"numeric": [3.0], "categorical": ["purple"]},
    ]
    r = server.post(f"{server.url}/v1/models/{job.model}/versions/{job.version}:predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    labels = [p["label"] for p in r.json()["predictions"]]
    assert labels[:2] == [1, 0]  # classes sort as no=0, yes=1


def test_text_classifier_serves_raw_text(client: Client, server: LiveServer) -> None:
    rng = np.random.default_rng(1)
    good = ["great", "wonderful", "excellent", "loved", "brilliant", "delightful"]
    bad = ["awful", "terrible", "boring", "hated", "dreadful", "dull"]
    filler = ["the", "film", "was", "really", "quite", "plot", "acting", "and", "a", "story", "i", "it"]
    lines = ["review,sentiment"]
    for i in range(300):
        positive = i % 2 == 0
        words = list(rng.choice(filler, size=8)) + list(rng.choice(good if positive else bad, size=2))
        rng.shuffle(words)
        lines.append(f'"{" ".join(words)} #{i}",{"pos" if positive else "neg"}')
    info = client.upload_dataset("reviews", ("\n".join(lines) + "\n").encode(), target="sentiment")
    assert [f["kind"] for f in info["schema"]["features"]] == ["text"]
    with pytest.raises(InvalidInput, match="text_classifier"):
        client.train("reviews", "logistic_regression", wait=False)
    job = client.train("reviews", "text_classifier", params={"epochs": 30, "lr": 0.05})
    assert job.metrics["accuracy"] >= 0.9
    version = client.get_version(job.model, job.version)  # type: ignore[arg-type]
    assert version["format"] == "pipeline" and {"tokenizer.json", "classifier.onnx", "evaluation.json"} <= set(
        version["files"]
    )
    body = {
        "inputs": [
            {
                "name": "text",
                "shape": [2],
                "datatype": "BYTES",
                "data": ["A wonderful, brilliant film!", "Boring and dreadful acting."],
            }
        ]
    }
    r = server.post(f"{server.url}/v2/models/{job.model}/infer", json=body)
    assert r.status_code == 200, r.text
    labels = next(o for o in r.json()["outputs"] if o["name"] == "label")["data"]
    assert labels == [1, 0]  # classes sort as neg=0, pos=1
