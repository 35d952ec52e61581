"""The inference log on a real server: a full queue under load drops records and counts them while every
request succeeds; the CLI sets logging and reads the log and the metrics; kill -9 while the writer stores
pages leaves a log whose every record opens, and the server starts again on the same home."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer, run_cli, scaled, start_server

ROW = [5.1, 3.5, 1.4, 0.2]
BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
#: A queue this small fills under a few threads' load between two writes of the writer.
ENV = {"STRATUS_INFERENCE_LOG_QUEUE": "20", "STRATUS_INFERENCE_LOG_FLUSH_SECONDS": "0.5"}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logged") / "home"


@pytest.fixture(scope="module")
def server(home: Path, sample_cache: Path) -> Iterator[LiveServer]:
    live = start_server(home, sample_cache, env=ENV)
    yield live
    live.stop()


def load(server: LiveServer, threads: int, requests: int, stop: threading.Event | None = None) -> list[int]:
    """``threads`` clients each sending up to ``requests`` V2 requests; the statuses (0: no answer)."""
    statuses: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        with server.client(timeout=scaled(30)) as client:
            for _ in range(requests):
                if stop is not None and stop.is_set():
                    return
                try:
                    status = client.post("/v2/models/iris/infer", json=BODY).status_code
                except httpx.TransportError:
                    status = 0
                with lock:
                    statuses.append(status)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=scaled(120))
    return statuses


def dropped(server: LiveServer) -> float:
    text = server.get(f"{server.url}/metrics").text
    found = re.findall(r'^stratus_inference_log_dropped_total\{[^}]*model="iris"[^}]*\} (\S+)$', text, flags=re.M)
    return sum(float(v) for v in found)


def logged_since(server: LiveServer, since: str = "1h") -> list[dict[str, Any]]:
    response = server.get(
        f"{server.url}/api/v1/models/iris/log", params={"format": "jsonl", "limit": 100000, "since": since}
    )
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def test_a_full_queue_drops_and_counts_records_and_fails_no_request(server: LiveServer) -> None:
    run_cli("logging", "set", "iris", "--mode", "all", "--payloads", url=server.url)
    shown = run_cli("models", "show", "iris", url=server.url).stdout
    assert "logging: all, with payloads (model setting)" in shown
    before = len(logged_since(server))
    sent: list[int] = []
    deadline = time.monotonic() + scaled(60)
    # Rounds of load until the queue has overflowed at least once (the first round nearly always does).
    while dropped(server) == 0 and time.monotonic() < deadline and len(sent) < 20_000:
        sent += load(server, threads=8, requests=60)
    assert sent and set(sent) == {200}, f"failed requests: {[s for s in sent if s != 200][:10]}"
    lost = dropped(server)
    assert lost > 0, "the queue never filled"
    # Every request is either in the log or counted as dropped.
    logged = len(logged_since(server)) - before
    assert logged + lost == len(sent), (logged, lost, len(sent))


def test_the_cli_reads_the_log(server: LiveServer) -> None:
    body = json.loads(run_cli("logs", "iris", "--since", "1h", "--limit", "3", "--json", url=server.url).stdout)
    assert len(body["records"]) == 3 and body["next"]
    assert body["records"][0]["inputs"]["input"]["data"] == pytest.approx(ROW)
    table = run_cli("logs", "iris", "--since", "1h", "--limit", "2", url=server.url).stdout
    assert "input[1, 4]=[5.1, 3.5, 1.4, 0.2]" in table
    errors = json.loads(run_cli("logs", "iris", "--status", "error", "--json", url=server.url).stdout)
    assert errors["records"] == []
    bad = run_cli("logs", "iris", "--since", "yesterday", url=server.url, check=False)
    assert bad.returncode == 1 and "since" in (bad.stdout + bad.stderr)


def test_the_sdk_sets_logging_and_reads_the_log(server: LiveServer) -> None:
    import io

    import pyarrow.parquet as pq

    from stratus import Client
    from stratus.errors import InvalidInput, NotFound

    with Client(server.url, api_key=server.admin_key) as client:
        assert client.set_logging("digits", "sampled", rate=0.5)["mode"] == "sampled"
        assert client.get_logging("digits") == {
            "scope": "model", "name": "digits", "mode": "sampled", "rate": 0.5, "payloads": False, "source": "model",
        }  # fmt: skip
        assert client.reset_logging("digits")["source"] == "default"
        page = client.log("iris", since="1h", limit=2)
        assert len(page["records"]) == 2 and page["next"]
        following = client.log("iris", since="1h", limit=2, before=page["next"])
        assert {r["id"] for r in following["records"]}.isdisjoint(r["id"] for r in page["records"])
        table = pq.read_table(io.BytesIO(client.export_log("iris", "parquet", since="1h", limit=3)))
        assert table.num_rows == 3
        series = client.metrics_series("iris", ["requests_per_s", "p99_ms"], since="1h", step=600)
        assert set(series) == {"requests_per_s", "p99_ms"} and len(series["p99_ms"]) == 6
        with pytest.raises(NotFound):
            client.log("nope")
        with pytest.raises(InvalidInput):
            client.set_logging("iris", "sampled", rate=2.0)


def test_an_endpoints_setting_comes_first_for_its_requests(server: LiveServer) -> None:
    from e2e.deploy_helpers import create, delete

    create(server, "flowers", targets=[{"model": "iris", "version": "1"}])
    try:
        run_cli("logging", "set", "flowers", "--endpoint", "--mode", "all", url=server.url)
        shown = run_cli("endpoints", "show", "flowers", url=server.url).stdout
        assert "logging: all (endpoint setting)" in shown
        since = time.time()
        for _ in range(5):
            assert server.post(f"{server.url}/v2/models/flowers/infer", json=BODY).status_code == 200
        records = server.get(f"{server.url}/api/v1/endpoints/flowers/log").json()["records"]
        assert len(records) == 5
        assert {(r["endpoint"], r["model"], r["version"], r["inputs"]) for r in records} == {
            ("flowers", "iris", 1, None)
        }
        through = [r for r in logged_since(server, "1m") if r["endpoint"] == "flowers" and r["at"] >= _iso(since)]
        assert len(through) == 5  # the model's log holds its requests through the endpoint too
        # Off for the endpoint: its requests are not logged, though the model logs every request of its own.
        run_cli("logging", "set", "flowers", "--endpoint", "--mode", "off", url=server.url)
        assert server.post(f"{server.url}/v2/models/flowers/infer", json=BODY).status_code == 200
        assert server.post(f"{server.url}/v2/models/iris/infer", json=BODY).status_code == 200
        assert len(server.get(f"{server.url}/api/v1/endpoints/flowers/log").json()["records"]) == 5
        newest = server.get(f"{server.url}/api/v1/models/iris/log", params={"limit": 1}).json()["records"][0]
        assert newest["endpoint"] == "" and newest["at"] > _iso(since)
    finally:
        delete(server, "flowers")


def test_the_cli_draws_the_metrics_history(server: LiveServer) -> None:
    # The server has served for more than one 10 s interval by now: the first one has closed.
    deadline = time.monotonic() + scaled(30)
    while True:
        table = run_cli("metrics", "iris", "--metric", "requests_per_s,p99_ms", "--since", "1h", "--step", "3600",
                        url=server.url).stdout  # fmt: skip
        rows = [line for line in table.splitlines() if re.match(r"^\W*\d{4}-\d\d-\d\d ", line)]
        if (rows and re.search(r"\d\.\d", rows[-1])) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "requests_per_s" in table and "p99_ms" in table and rows, table
    assert re.search(r"\d\.\d", rows[-1]), table


def _iso(moment: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def test_kill_9_while_the_writer_stores_leaves_a_log_that_opens(server: LiveServer, sample_cache: Path) -> None:
    stop = threading.Event()
    loader = threading.Thread(target=load, args=(server, 4, 100_000, stop))
    loader.start()
    try:
        # Kill once the writer has stored pages under this load and keeps storing them.
        start = len(logged_since(server, "1m"))
        deadline = time.monotonic() + scaled(30)
        while len(logged_since(server, "1m")) < start + 100 and time.monotonic() < deadline:
            time.sleep(0.2)
        server.stop(kill=True)
    finally:
        stop.set()
        loader.join(timeout=scaled(60))
    again = start_server(server.home, sample_cache, env=ENV)
    server.process, server.url, server.port = again.process, again.url, again.port  # the module's server
    records = logged_since(server)
    assert len(records) > 100
    for record in records:  # every record opened (sealed pages authenticate) and is whole
        assert record["status"] == 200 and record["model"] == "iris" and record["version"] == 1
        if record["endpoint"]:  # logged without payloads (the endpoint test)
            assert record["inputs"] is None and record["outputs"] is None
            continue
        assert record["inputs"]["input"] == {"dtype": "<f4", "shape": [1, 4], "data": pytest.approx(ROW)}
        assert len(record["outputs"]["probabilities"]["data"]) == 3
    # The restarted server logs on.
    assert server.post(f"{server.url}/v2/models/iris/infer", json=BODY).status_code == 200
    assert len(logged_since(server)) == len(records) + 1
