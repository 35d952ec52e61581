"""AutoML jobs through the API, in-process: what is refused at submit and why; one real job on iris (15 s budget)
whose leaderboard, registered version and top-2 ensemble are checked, and a job that is cancelled while it runs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_diabetes, load_iris

from conftest import as_admin, make_settings, scaled
from stratus.cli.automl import render_leaderboard
from stratus.platform import create_app

TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("home")
    settings = make_settings(home, automl_max_budget_s=600, job_slots=2, job_threads=1)
    with TestClient(create_app(settings)) as client:
        as_admin(client)
        # CSV uploads, not built-in datasets: those load scikit-learn in a child process each, seconds apiece.
        for name, (X, y) in (("iris", load_iris(return_X_y=True)), ("diabetes", load_diabetes(return_X_y=True))):
            rows = [",".join([*(f"x{i}" for i in range(X.shape[1])), "target"])]
            rows += [",".join([*(repr(float(v)) for v in x), str(t)]) for x, t in zip(X, y, strict=True)]
            data = ("\n".join(rows) + "\n").encode()
            form = {"name": name, "target": "target"}
            r = client.post("/api/v1/datasets", data=form, files={"file": ("d.csv", data)})
            assert r.status_code == 201, r.text
        yield client


def wait_for(app: TestClient, job_id: str, states: tuple[str, ...], seconds: float) -> dict[str, object]:
    deadline = time.monotonic() + scaled(seconds)
    while True:
        job: dict[str, object] = app.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"dataset": "iris", "metric": "f1_macro", "budget": 5}, 400, "too short"),
        ({"dataset": "iris", "metric": "f1_macro", "budget": "9s"}, 400, "too short"),
        ({"dataset": "iris", "metric": "f1_macro", "budget": "1h"}, 400, "over this server's limit of 600 s"),
        ({"dataset": "iris", "metric": "f1_macro", "budget": "soon"}, 400, "a duration is"),
        ({"dataset": "iris", "metric": "rmse", "budget": 60}, 400, "does not fit dataset 'iris', a classification"),
        ({"dataset": "diabetes", "metric": "roc_auc", "budget": 60}, 400, "a regression task"),
        ({"dataset": "iris", "metric": "mape", "budget": 60}, 400, "metric"),
        ({"dataset": "iris", "metric": "accuracy", "budget": 60, "families": ["cnn"]}, 400, "cannot train on"),
        ({"dataset": "iris", "metric": "accuracy", "budget": 60, "families": ["xgboost"]}, 400, "unknown families"),
        ({"dataset": "iris", "metric": "accuracy", "budget": 60, "extra": 1}, 400, "extra"),
        ({"dataset": "nosuch", "metric": "accuracy", "budget": 60}, 404, "does not exist"),
    ],
)
def test_refused_at_submit_with_the_reason(app: TestClient, body: dict[str, object], status: int, message: str) -> None:
    r = app.post("/api/v1/automl", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_a_job_searches_registers_and_serves_its_best_model(
    app: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {
        "dataset": "iris",
        "metric": "f1_macro",
        "budget": 20,
        "families": ["logistic_regression", "decision_tree"],
        "folds": 3,
        "ensemble": 2,
        "name": "iris-auto",
    }
    r = app.post("/api/v1/automl", json=body)
    assert r.status_code == 201, r.text
    submitted = r.json()
    assert submitted["kind"] == "automl" and submitted["timeout_s"] == 22  # the budget, and the backstop
    job = wait_for(app, submitted["id"], TERMINAL, 60)
    assert job["state"] == "succeeded", job["error"]
    board = app.get(f"/api/v1/jobs/{submitted['id']}/leaderboard").json()
    rows = board["rows"]
    assert board["metric"] == "f1_macro" and board["version"] == 1 and rows
    assert set(rows[0]) >= {"trial", "family", "params", "state", "cv_mean", "cv_std", "folds", "fit_s"}
    assert {"size_bytes", "latency_ms", "error"} <= set(rows[0])
    complete = [row for row in rows if row["state"] == "complete"]
    assert complete and complete == rows[: len(complete)]  # complete trials first, best first
    assert [row["cv_mean"] for row in complete] == sorted((row["cv_mean"] for row in complete), reverse=True)
    assert all(row["folds"] == 3 and row["size_bytes"] > 0 for row in complete)
    assert {row["family"] for row in rows if row["default"]} == {"logistic_regression", "decision_tree"}
    assert board["summary"]["trials"] == len(rows)
    result = board["result"]
    chosen = next(row for row in complete if row["trial"] == result["trial"])
    assert result["family"] == chosen["family"] and result["cv_mean"] == chosen["cv_mean"]
    confirmed = [row for row in complete if row["confirm_mean"] is not None]
    assert result["confirmed"] == len(confirmed) and len({row["trial"] for row in rows}) == len(rows)
    if confirmed:  # the choice is made on the confirmation folds: the best there, or a default within one SE
        assert result["confirm_mean"] == chosen["confirm_mean"]
        lead = max(confirmed, key=lambda row: row["confirm_mean"])
        gap = lead["confirm_mean"] - chosen["confirm_mean"]
        assert gap == 0 or (chosen["default"] and gap <= lead["confirm_se"])
    assert 0.8 <= result["test_score"] <= 1.0

    version = app.get("/api/v1/models/iris-auto/versions/1").json()
    assert version["params"]["trainer"] == result["family"] and version["params"]["job_id"] == submitted["id"]
    assert version["metrics"]["automl"]["test_score"] == result["test_score"]
    assert "automl-leaderboard.json" in version["files"] and "evaluation.json" in version["files"]
    X, y = load_iris(return_X_y=True)
    served = app.post("/v1/models/iris-auto/versions/1:predict", json={"instances": X.tolist()})
    assert served.status_code == 200, served.text
    labels = np.array([p["label"] for p in served.json()["predictions"]])
    assert (labels == y).mean() > 0.85
    # The top-2 ensemble: a pipeline averaging the two best configurations' probabilities.
    ensemble = result["ensemble"]
    assert ensemble["version"] == 2 and len(ensemble["members"]) == 2 and ensemble["combine"] == "average"
    assert ensemble["members"][0]["trial"] == result["trial"]
    pipeline = app.get("/api/v1/models/iris-auto/versions/2").json()
    assert pipeline["format"] == "pipeline" and pipeline["params"]["trainer"] == "automl-ensemble"
    two = app.post("/v1/models/iris-auto/versions/2:predict", json={"instances": X.tolist()})
    assert two.status_code == 200, two.text
    assert (np.array([p["label"] for p in two.json()["predictions"]]) == y).mean() > 0.85
    # The CLI's table of the same leaderboard.
    render_leaderboard(board, limit=5)
    table = capsys.readouterr().out
    assert f"AutoML job {submitted['id']} (succeeded): f1_macro" in table and complete[0]["family"] in table
    assert "registered as version 1" in table and "ensemble of 2 (average)" in table


def test_cancel_ends_a_running_job(app: TestClient) -> None:
    body = {"dataset": "iris", "metric": "accuracy", "budget": 120, "families": ["logistic_regression"]}
    job_id = app.post("/api/v1/automl", json=body).json()["id"]
    deadline = time.monotonic() + scaled(30)
    while time.monotonic() < deadline:  # running, and trials ending: the search is under way
        if any(e["kind"] == "trial" for e in app.get(f"/api/v1/jobs/{job_id}/logs").json()["events"]):
            break
        time.sleep(0.2)
    cancelled = app.post(f"/api/v1/jobs/{job_id}/cancel").json()
    job = wait_for(app, job_id, TERMINAL, 10) if cancelled["state"] not in TERMINAL else cancelled
    assert job["state"] == "cancelled" and job["version"] is None
    board = app.get(f"/api/v1/jobs/{job_id}/leaderboard").json()
    assert board["state"] == "cancelled" and board["rows"]  # the trials before the cancel stay on the board
