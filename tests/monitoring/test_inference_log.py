"""The inference log and the metrics history through the API, in process: settings per model and endpoint,
records with their tensors, filters and paging, JSON Lines and Parquet exports, the reader API the drift
check uses, the metrics series, retention and the sealing at rest."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from conftest import as_admin, make_settings
from stratus.api import create_app

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def v2(rows: list[list[float]]) -> dict[str, Any]:
    data = [value for row in rows for value in row]
    return {"inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": data}]}


@pytest.fixture(scope="module")
def client(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("log") / "home"
    with TestClient(create_app(make_settings(home, sample_cache))) as raw:
        yield as_admin(raw)


def platform_of(client: TestClient) -> Any:
    return client.app.state.platform  # type: ignore[attr-defined]


def test_logging_is_off_by_default_and_set_per_model(client: TestClient) -> None:
    assert client.get("/api/v1/models/iris/logging").json() == {
        "scope": "model",
        "name": "iris",
        "mode": "off",
        "rate": 1.0,
        "payloads": False,
        "source": "default",
    }
    assert client.post("/v2/models/digits/infer", json={"inputs": []}).status_code == 400
    response = client.put("/api/v1/models/iris/logging", json={"mode": "all", "payloads": True})
    assert response.status_code == 200, response.text
    assert response.json()["source"] == "model" and response.json()["mode"] == "all"
    for bad in ({"mode": "sometimes"}, {"mode": "sampled", "rate": 0}, {"mode": "sampled", "rate": 1.5}):
        assert client.put("/api/v1/models/iris/logging", json=bad).status_code == 422
    assert client.put("/api/v1/models/nope/logging", json={"mode": "all"}).status_code == 404


def test_records_carry_who_what_how_and_the_tensors(client: TestClient) -> None:
    client.put("/api/v1/models/iris/logging", json={"mode": "all", "payloads": True})
    for rows in ([ROWS[0]], ROWS[:2], ROWS):
        assert client.post("/v2/models/iris/infer", json=v2(rows)).status_code == 200
    assert client.post("/v1/models/iris:predict", json={"instances": [ROWS[1]]}).status_code == 200
    bad = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    assert client.post("/v2/models/iris/infer", json=bad).status_code == 400

    body = client.get("/api/v1/models/iris/log", params={"since": "1h"}).json()
    records = body["records"]
    assert [r["protocol"] for r in records[:5]] == ["v2", "v1", "v2", "v2", "v2"]
    failed, v1, three = records[0], records[1], records[2]
    assert failed["status"] == 400 and failed["error"] == "invalid_input" and failed["outputs"] is None
    assert v1["status"] == 200 and v1["inputs"]["input"]["data"] == pytest.approx(ROWS[1])
    assert three["batch_size"] == 3 and three["inputs"]["input"]["shape"] == [3, 4]
    assert three["outputs"]["label"]["shape"] == [3] and len(three["outputs"]["probabilities"]["data"]) == 9
    assert three["model"] == "iris" and three["version"] == 1 and three["endpoint"] == ""
    assert three["key_id"] and three["project"] == "default" and three["latency_ms"] > 0
    assert three["at"].endswith("Z")

    errors = client.get("/api/v1/models/iris/log", params={"status": "error"}).json()["records"]
    assert errors and all(r["status"] >= 400 for r in errors)
    assert all(r["status"] == 200 for r in client.get("/api/v1/models/iris/log?status=200").json()["records"])
    assert client.get("/api/v1/models/iris/log", params={"version": 2}).json()["records"] == []


def test_paging_walks_every_record_once(client: TestClient) -> None:
    client.put("/api/v1/models/iris/logging", json={"mode": "all", "payloads": False})
    for _ in range(7):
        client.post("/v2/models/iris/infer", json=v2([ROWS[0]]))
    everything = client.get("/api/v1/models/iris/log", params={"limit": 1000}).json()["records"]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"before": cursor} if cursor else {})}
        page = client.get("/api/v1/models/iris/log", params=params).json()
        seen += [r["id"] for r in page["records"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [r["id"] for r in everything] and len(seen) >= 7
    assert everything[0]["inputs"] is None  # payloads off now


def test_exports_as_json_lines_and_parquet(client: TestClient) -> None:
    import pyarrow.parquet as pq

    client.put("/api/v1/models/iris/logging", json={"mode": "all", "payloads": True})
    client.post("/v2/models/iris/infer", json=v2(ROWS[:2]))
    lines = client.get("/api/v1/models/iris/log", params={"format": "jsonl", "limit": 5})
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    parsed = [orjson.loads(line) for line in lines.content.splitlines()]
    assert len(parsed) == 5 and parsed[0]["inputs"]["input"]["shape"] == [2, 4]
    parquet = client.get("/api/v1/models/iris/log", params={"format": "parquet", "limit": 5})
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.num_rows == 5 and table.column("model").to_pylist() == ["iris"] * 5
    assert orjson.loads(table.column("inputs")[0].as_py())["input"]["shape"] == [2, 4]
    assert str(table.schema.field("at").type) == "timestamp[us, tz=UTC]"
    assert client.get("/api/v1/models/iris/log", params={"limit": 100_001}).status_code == 422
    assert client.get("/api/v1/models/iris/log", params={"since": "1 hour"}).status_code == 422
    assert client.get("/api/v1/models/iris/log", params={"before": "x"}).status_code == 422


def test_the_reader_api_gives_the_logged_inputs_as_arrays(client: TestClient) -> None:
    client.put("/api/v1/models/iris/logging", json={"mode": "all", "payloads": True})
    since = time.time()
    client.post("/v2/models/iris/infer", json=v2(ROWS[:2]))
    client.post("/v2/models/iris/infer", json=v2([ROWS[2]]))
    log = platform_of(client).inference_log
    newest, older = log.inputs("default", "iris", 1, since=since, limit=10)
    assert newest["input"].dtype == np.float32 and newest["input"].shape == (1, 4)
    assert np.allclose(np.concatenate([newest["input"], older["input"]]), [ROWS[2], *ROWS[:2]])
    assert log.inputs("other-project", "iris", since=since) == []


def test_sampling_keeps_a_share(client: TestClient) -> None:
    client.put("/api/v1/models/iris/logging", json={"mode": "sampled", "rate": 0.25})
    since = time.time()
    for _ in range(200):
        assert client.post("/v2/models/iris/infer", json=v2([ROWS[0]])).status_code == 200
    kept = len(list(platform_of(client).inference_log.records("default", model="iris", start=since)))
    assert 10 <= kept <= 110  # 50 expected; the bounds are 6 standard deviations wide
    client.delete("/api/v1/models/iris/logging")
    assert client.get("/api/v1/models/iris/logging").json()["source"] == "default"


def test_endpoint_settings_and_log(client: TestClient) -> None:
    assert client.get("/api/v1/endpoints/nope/logging").status_code == 404
    assert client.get("/api/v1/endpoints/nope/log").status_code == 404


def test_metrics_series(client: TestClient) -> None:
    history = platform_of(client).history
    for _ in range(5):
        client.post("/v2/models/iris/infer", json=v2([ROWS[0]]))
    wrong = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    assert client.post("/v2/models/iris/infer", json=wrong).status_code == 400
    history.tick(time.time() + 10)
    response = client.get(
        "/api/v1/metrics/series",
        params={"name": "iris", "metric": "requests_per_s,error_rate,p99_ms,mean_ms", "since": "10m", "step": 600},
    )
    assert response.status_code == 200, response.text
    series = response.json()["series"]
    [(_, rate)] = series["requests_per_s"]
    assert rate is not None and rate * 600 >= 6
    [(_, errors)] = series["error_rate"]
    assert 0 < errors < 1
    assert series["p99_ms"][0][1] >= series["mean_ms"][0][1] > 0
    assert history.window("default", "model", "iris", "requests_per_s", 3600) is not None
    for bad in (
        {"name": "iris", "metric": "p42_ms"},
        {"name": "iris", "metric": "p99_ms", "step": 1},
        {"name": "iris", "metric": "p99_ms", "scope": "nope"},
    ):
        assert client.get("/api/v1/metrics/series", params=bad).status_code == 422
    assert client.get("/api/v1/metrics/series", params={"name": "nope", "metric": "p99_ms"}).status_code == 404
