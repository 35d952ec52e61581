"""Drift end to end in one app: a logistic regression trained on breast_cancer by a real job, its inference log
on with payloads, requests sent over V2, drift read from the API, the history, the gauges, and the CLI's
table. The rows sent are the held-out split the trainer kept out (test_split 0.25, seed 0, stratified), so
the reference (the training split) never saw them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from conftest import as_admin, make_settings, scaled
from stratus import tenancy
from stratus.api import create_app
from stratus.cli.drift import render_report
from stratus.training.drift_reference import REFERENCE_FILE

MODEL = "cancer-logistic-regression"
SHIFTED = (3, 7)  # mean area, mean concave points
ROWS_PER_REQUEST = 25  # the log keeps tensors of up to 1,000 values whole
WINDOW = 50


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("drift") / "home"
    # No periodic computation: the history must hold exactly the reports this test asked for.
    settings = make_settings(home, drift_interval_seconds=0, job_threads=1)
    with TestClient(create_app(settings)) as client:
        as_admin(client)
        assert client.post("/api/v1/datasets/builtin", json={"builtin": "breast_cancer", "name": "cancer"}).is_success
        job = client.post("/api/v1/jobs", json={"dataset": "cancer", "model": "logistic_regression"}).json()
        deadline = time.monotonic() + scaled(120)
        while (state := client.get(f"/api/v1/jobs/{job['id']}").json())["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
        assert state["state"] == "succeeded", state
        r = client.put(f"/api/v1/models/{MODEL}/logging", json={"mode": "all", "payloads": True})
        assert r.status_code == 200, r.text
        yield client


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray, list[str]]:
    data = load_breast_cancer()
    train, test = train_test_split(data.data, test_size=0.25, random_state=0, stratify=data.target)
    return train, test, [str(n) for n in data.feature_names]


def send(client: TestClient, rows: np.ndarray, model: str = MODEL) -> None:
    for start in range(0, len(rows), ROWS_PER_REQUEST):
        batch = rows[start : start + ROWS_PER_REQUEST].astype(np.float32)
        body = {
            "inputs": [
                {"name": "input", "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}
            ]
        }
        r = client.post(f"/v2/models/{model}/infer", json=body)
        assert r.status_code == 200, r.text


def drift(client: TestClient, **params: Any) -> dict[str, Any]:
    r = client.get(f"/api/v1/models/{MODEL}/drift", params=params)
    assert r.status_code == 200, r.text
    report: dict[str, Any] = r.json()
    return report


def test_a_trained_version_keeps_its_training_split_as_reference(app: TestClient) -> None:
    version = app.get(f"/api/v1/models/{MODEL}/versions/1").json()
    assert REFERENCE_FILE in version["files"]
    reference = app.get(f"/api/v1/models/{MODEL}/versions/1/reference").json()
    assert (reference["source"], reference["rows"], reference["layout"]) == ("training split", 426, "tabular")
    assert len(reference["features"]) == 30 and reference["prediction"] is True


def test_two_shifted_features_are_flagged_by_name_without_dataset_drift(
    app: TestClient, split: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """One window: the whole held-out split (143 rows), with two features moved by 2 standard deviations.
    Unshifted, this window flags no feature at all (test_the_held_out_split_itself_does_not_drift)."""
    train, test, names = split
    rows = test.copy()
    rows[:, SHIFTED] += 2 * train[:, SHIFTED].std(axis=0)
    send(app, rows)
    report = drift(app, last=len(test))
    assert report["status"] == "ok" and report["window"]["rows"] == len(test)
    assert report["drifted"] == [names[i] for i in SHIFTED]
    assert (report["drifted_features"], report["features_tested"], report["dataset_drift"]) == (2, 30, False)
    assert report["drift_share"] == pytest.approx(2 / 30)
    assert report["prediction"]["test"] == "chisquare"  # labels against the evaluation-time labels
    gauges = {
        sample.labels["feature"]: sample.value
        for family in text_string_to_metric_families(app.get("/metrics").text)
        if family.name == "stratus_feature_drift"
        for sample in family.samples
        if sample.labels["model"] == MODEL and sample.labels["project"] == "default"
    }
    render_report(report)  # what `stratus drift NAME` prints
    table = capsys.readouterr().out
    assert "DRIFT" in next(line for line in table.splitlines() if "mean area" in line)
    assert "2/30 features drifted" in table and "no dataset drift" in table
    # Larger, more concave tumours: the model's labels move away from its evaluation-time labels too.
    assert report["prediction"]["drifted"] is True and gauges.pop("prediction") == 1.0
    assert len(gauges) == 30 and {f for f, v in gauges.items() if v == 1.0} == {names[i] for i in SHIFTED}


def test_sixteen_shifted_features_drift_the_dataset(app: TestClient, split: Any) -> None:
    train, test, names = split
    rows = test.copy()
    rows[:, :16] += 2 * train[:, :16].std(axis=0)
    send(app, rows)
    report = drift(app, last=len(test))
    assert set(report["drifted"]) == set(names[:16]) and report["dataset_drift"] is True


def test_the_held_out_split_itself_does_not_drift(app: TestClient, split: Any) -> None:
    _, test, _ = split
    send(app, test)
    report = drift(app, last=len(test))
    assert (report["drifted"], report["dataset_drift"]) == ([], False)
    # The very rows the evaluation-time labels were predicted on: the same labels.
    assert report["prediction"]["score"] == pytest.approx(1.0) and report["prediction"]["drifted"] is False


def test_twenty_held_out_windows_flag_few_feature_windows_and_never_the_dataset(app: TestClient, split: Any) -> None:
    _, test, _ = split
    rng = np.random.default_rng(23)
    flagged = 0
    for _ in range(20):
        send(app, test[rng.choice(len(test), size=WINDOW, replace=False)])
        report = drift(app, last=WINDOW)
        assert report["window"]["rows"] == WINDOW and report["features_tested"] == 30
        assert report["dataset_drift"] is False, report["drifted"]
        flagged += report["drifted_features"]
    print(f"20 held-out windows: {flagged} of 600 feature-windows flagged ({flagged / 6:.1f}%)")
    assert flagged <= 0.08 * 600


def test_each_report_is_a_point_of_the_drift_history(app: TestClient) -> None:
    points = app.get(f"/api/v1/models/{MODEL}/drift/history").json()["points"]
    assert len(points) == 23  # the four tests above: 1 + 1 + 1 + 20 reports
    assert points[0]["drift_share"] == pytest.approx(2 / 30) and points[1]["dataset_drift"] is True
    assert points[2]["drift_share"] == 0
    assert points[0]["features"]["mean area"][2] is True  # [test, score, drifted, psi]
    assert [p["at"] for p in points] == sorted(p["at"] for p in points)


def test_a_short_window_is_reported_as_insufficient_not_tested(app: TestClient) -> None:
    report = app.get(f"/api/v1/models/{MODEL}/drift", params={"last": 5}).json()
    assert report["status"] == "insufficient_data" and report["features"] == [] and "at least 30" in report["message"]


def test_a_version_trained_before_references_gets_one_from_its_dataset(app: TestClient) -> None:
    """What an older server left: a trained version with lineage and evaluation.json, no reference file."""
    platform = app.app.state.platform  # type: ignore[attr-defined]
    trained = platform.registry.get_version(MODEL, 1)
    with tenancy.acting_as(tenancy.Caller()):
        platform.registry.register_onnx(
            "old-cancer",
            platform.registry.read_artifact(trained),
            files={"evaluation.json": platform.registry.read_file(trained, "evaluation.json")},
            dataset=trained.dataset,
            task="classification",
        )
    assert REFERENCE_FILE not in app.get("/api/v1/models/old-cancer/versions/1").json()["files"]
    reference = app.get("/api/v1/models/old-cancer/versions/1/reference").json()
    assert (reference["source"], reference["rows"], len(reference["features"])) == (
        "dataset cancer (all rows)",
        569,
        30,
    )
    assert REFERENCE_FILE in app.get("/api/v1/models/old-cancer/versions/1").json()["files"]  # kept


def test_an_outside_version_needs_an_uploaded_reference(app: TestClient, split: Any, tmp_path: Path) -> None:
    platform = app.app.state.platform  # type: ignore[attr-defined]
    onnx = platform.registry.read_artifact(platform.registry.get_version(MODEL, 1))
    assert app.post("/api/v1/models/outside/versions", files={"file": ("m.onnx", onnx)}).status_code == 201
    assert app.put("/api/v1/models/outside/logging", json={"mode": "all", "payloads": True}).status_code == 200
    missing = app.get("/api/v1/models/outside/drift")
    assert missing.status_code == 404 and "upload one" in missing.json()["error"]
    train, test, names = split
    csv = ",".join(f'"{n}"' for n in names) + "\n" + "\n".join(",".join(map(str, row)) for row in train) + "\n"
    r = app.put("/api/v1/models/outside/versions/1/reference", files={"file": ("train.csv", csv.encode())})
    assert r.status_code == 200, r.text
    assert (r.json()["rows"], r.json()["prediction"]) == (426, True)
    assert app.put("/api/v1/models/outside/versions/1/reference").status_code in (400, 422)  # no file
    empty = app.get("/api/v1/models/outside/drift").json()  # a reference, no traffic yet
    assert (empty["status"], empty["window"]["rows"], empty["window"]["requests"]) == ("insufficient_data", 0, 0)
    rows = test.copy()
    rows[:, SHIFTED] += 2 * train[:, SHIFTED].std(axis=0)
    send(app, rows, "outside")
    report = app.get("/api/v1/models/outside/drift", params={"last": len(test)}).json()
    assert report["drifted"] == [names[i] for i in SHIFTED]


def test_an_endpoint_reports_each_version_it_routes_to(app: TestClient, split: Any) -> None:
    """Requests through an endpoint (a replica process) are logged under the endpoint; its drift report has
    one entry per version of its live revision, each against that version's reference."""
    r = app.post("/api/v1/endpoints", json={"name": "tumours", "targets": [{"model": MODEL, "version": 1}]})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + scaled(60)
    while app.get("/api/v1/endpoints/tumours").json()["state"] != "ready":
        assert time.monotonic() < deadline, "the endpoint did not go live"
        time.sleep(0.05)
    try:
        assert app.put("/api/v1/endpoints/tumours/logging", json={"mode": "all", "payloads": True}).is_success
        train, test, names = split
        rows = test.copy()
        rows[:, SHIFTED] += 2 * train[:, SHIFTED].std(axis=0)
        send(app, rows, "tumours")
        result = app.get("/api/v1/endpoints/tumours/drift", params={"last": len(test)}).json()
        [report] = result["reports"]
        assert (result["endpoint"], report["endpoint"], report["model"], report["version"]) == (
            "tumours",
            "tumours",
            MODEL,
            1,
        )
        assert report["window"]["rows"] == len(test) and report["drifted"] == [names[i] for i in SHIFTED]
        history = app.get("/api/v1/endpoints/tumours/drift/history").json()["points"]
        assert [p["endpoint"] for p in history] == ["tumours"]
    finally:
        assert app.delete("/api/v1/endpoints/tumours").status_code == 204


def test_the_periodic_computation_stores_a_report_per_logged_target(app: TestClient) -> None:
    """What the drift thread does every STRATUS_DRIFT_INTERVAL_SECONDS (off in this module, so run by hand):
    every model and endpoint logged with payloads, as its project; the deleted endpoint is skipped."""
    platform = app.app.state.platform  # type: ignore[attr-defined]
    targets = platform.drift_monitor.targets()
    assert ("default", "model", MODEL) in targets and ("default", "model", "outside") in targets
    before = len(app.get(f"/api/v1/models/{MODEL}/drift/history").json()["points"])
    assert platform.drift_monitor.run_once() >= 2
    points = app.get(f"/api/v1/models/{MODEL}/drift/history").json()["points"]
    assert len(points) == before + 1 and points[-1]["window_rows"] == 500  # the default window


def test_a_compressed_variant_is_compared_with_its_parents_reference(app: TestClient) -> None:
    """As compression registers a variant: same model, parent_version set, no reference of its own."""
    platform = app.app.state.platform  # type: ignore[attr-defined]
    parent = platform.registry.get_version(MODEL, 1)
    with tenancy.acting_as(tenancy.Caller()):
        variant = platform.registry.register_onnx(
            MODEL, platform.registry.read_artifact(parent), parent_version=1, dataset=parent.dataset
        )
    assert REFERENCE_FILE not in variant.files
    reference = app.get(f"/api/v1/models/{MODEL}/versions/{variant.version}/reference").json()
    assert (reference["source"], reference["rows"]) == ("training split", 426)
