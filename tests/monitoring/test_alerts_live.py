"""Alerts end to end on a real server: a p99 rule on a model whose requests get slow fires, a real receiver on
127.0.0.1 (allowed explicitly: STRATUS_OUTBOUND_ALLOWED_NETWORKS) gets a signed webhook on the third try after
failing twice, the ALERTS gauge and the audit log show it, and the rule resolves when the load stops. The CLI
creates the rule and reads the history; a read key cannot change rules."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import numpy as np
import orjson
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import LiveServer, bearer, run_cli, scaled, start_server
from stratus.sdk import verify_webhook
from webhook_receiver import Received, Receiver, receiver

WIDTH, DEPTH, SLOW_ROWS = 256, 32, 512


def heavy_model() -> bytes:
    """x [batch, 256] through 32 matrix products: its latency grows with the rows a request sends."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])
    weights = np.random.default_rng(0).standard_normal((WIDTH, WIDTH)).astype(np.float32) / WIDTH
    names = ["x", *[f"h{i}" for i in range(1, DEPTH)], "y"]
    nodes = [helper.make_node("MatMul", [names[i], "w"], [names[i + 1]]) for i in range(DEPTH)]
    graph = helper.make_graph(nodes, "heavy", [x], [y], [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="stratus-tests")
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    with receiver(fail_first=2) as r:
        yield r


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"STRATUS_OUTBOUND_ALLOWED_NETWORKS": '["127.0.0.1/32"]', "STRATUS_WEBHOOK_BACKOFF_SECONDS": "0.2"}
    live = start_server(tmp_path_factory.mktemp("alerts") / "home", None, env=env)
    for name in ("heavy", "probe"):  # probe: the same model, to time it without traffic on heavy
        r = live.post(f"{live.url}/api/v1/models/{name}/versions", files={"file": ("h.onnx", heavy_model())})
        assert r.status_code == 201, r.text
    yield live
    live.stop()


SLOW_BODY = orjson.dumps(
    {"inputs": [{"name": "x", "shape": [SLOW_ROWS, WIDTH], "datatype": "FP32", "data": [0.5] * (SLOW_ROWS * WIDTH)}]}
)


def threshold_ms(server: LiveServer) -> int:
    """A p99 threshold a quarter of what a slow request takes in this server on this machine (its own mean over a
    few requests to the probe model), so the rule fires on a fast machine as on a slow one."""
    with server.client(timeout=scaled(30)) as client:
        for _ in range(5):
            r = client.post("/v2/models/probe/infer", content=SLOW_BODY, headers={"Content-Type": "application/json"})
            assert r.status_code == 200, r.text
    total = count = 0.0
    for line in server.get(f"{server.url}/metrics").text.splitlines():
        if 'model="probe"' in line and line.startswith("stratus_inference_request_duration_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        if 'model="probe"' in line and line.startswith("stratus_inference_request_duration_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    assert count == 5, count
    return max(1, int(total / count * 1000 / 4))


def slow_load(server: LiveServer, stop: threading.Event, first_done: list[float]) -> None:
    """Slow requests (512 rows each) until told to stop; bounded in count and time."""
    body = SLOW_BODY
    deadline = time.monotonic() + scaled(60)
    with server.client(timeout=scaled(30)) as client:
        for _ in range(2000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            r = client.post("/v2/models/heavy/infer", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 200, r.text
            if not first_done:
                first_done.append(time.time())


def deliveries(hook: Receiver, status: str) -> list[Received]:
    return [r for r in hook.received() if orjson.loads(r.body)["status"] == status]


def test_a_p99_rule_fires_a_signed_webhook_and_resolves_when_the_load_stops(server: LiveServer, hook: Receiver) -> None:
    limit = threshold_ms(server)
    created = run_cli(
        "alerts",
        "create",
        "slow",
        "--model",
        "heavy",
        "--when",
        f"p99 > {limit}ms",
        "--webhook",
        hook.url,
        "--json",
        url=server.url,
    )
    secret = orjson.loads(created.stdout)["secret"]
    assert f"p99_ms > {limit} ms" in orjson.loads(created.stdout)["condition"]
    assert server.get(f"{server.url}/api/v1/alerts/slow").json()["state"] == "inactive"  # no traffic yet

    stop, first_done = threading.Event(), []
    load = threading.Thread(target=slow_load, args=(server, stop, first_done))
    load.start()
    try:
        # The receiver fails twice; the third attempt of the same event gets through.
        hook.wait_for(lambda seen: any(r.status == 200 for r in seen), scaled(60))
        metrics = server.get(f"{server.url}/metrics").text
    finally:
        stop.set()
        load.join()
    load_stopped = time.time()
    fired = deliveries(hook, "firing")
    assert [r.status for r in fired] == [500, 500, 200]
    assert [r.headers["Stratus-Delivery-Attempt"] for r in fired] == ["1", "2", "3"]
    assert len({r.headers["Stratus-Event-Id"] for r in fired}) == 1
    for r in fired:
        assert verify_webhook(secret, r.headers, r.body)
        assert not verify_webhook(secret, r.headers, r.body + b" ")
    event = orjson.loads(fired[-1].body)
    assert event["rule"] == "slow" and event["model"] == "heavy" and event["value"] > limit
    gauge = [line for line in metrics.splitlines() if line.startswith("stratus_alerts{")]
    assert any('alertname="slow",alertstate="firing"' in g and 'target="heavy"' in g for g in gauge), gauge
    fired_at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()
    print(f"\nfirst slow request answered -> rule fired: {fired_at - first_done[0]:.1f} s (history intervals: 10 s)")

    # The load stopped: the next closed interval has no requests, and the rule resolves.
    resolved = hook.wait_for(lambda seen: any(orjson.loads(r.body)["status"] == "resolved" for r in seen), scaled(60))
    (resolve,) = [r for r in resolved if orjson.loads(r.body)["status"] == "resolved"]
    assert resolve.status == 200 and verify_webhook(secret, resolve.headers, resolve.body)
    resolved_at = datetime.fromisoformat(orjson.loads(resolve.body)["at"].replace("Z", "+00:00")).timestamp()
    print(f"load stopped -> rule resolved: {resolved_at - load_stopped:.1f} s")
    assert 'alertname="slow"' not in server.get(f"{server.url}/metrics").text

    history = orjson.loads(run_cli("alerts", "history", "slow", "--json", url=server.url).stdout)
    assert [e["status"] for e in history] == ["resolved", "firing"]
    assert [(a["attempt"], a["status_code"]) for a in history[1]["attempts"]] == [(1, 500), (2, 500), (3, 200)]
    assert history[1]["delivery"] == "delivered" and history[0]["delivery"] == "delivered"
    audit = server.get(f"{server.url}/api/v1/audit", params={"limit": 100}).json()["events"]
    assert [e["action"] for e in audit if e["action"].startswith("alert ")] == ["alert resolved", "alert firing"]
    assert "slow" in run_cli("alerts", "list", url=server.url).stdout


def test_a_read_key_sees_rules_but_cannot_change_them(server: LiveServer) -> None:
    read = server.post(f"{server.url}/api/v1/keys", json={"scopes": ["read"]}).json()["key"]
    rule = {"name": "errors", "target": "heavy", "metric": "error_rate", "threshold": 0.5}
    with httpx.Client(base_url=server.url, headers=bearer(read)) as client:
        assert client.post("/api/v1/alerts", json=rule).status_code == 403
        assert server.post(f"{server.url}/api/v1/alerts", json=rule).status_code == 201
        assert client.get("/api/v1/alerts/errors").json()["metric"] == "error_rate"
        assert client.patch("/api/v1/alerts/errors", json={"enabled": False}).status_code == 403
        assert client.delete("/api/v1/alerts/errors").status_code == 403
    assert server.get(f"{server.url}/api/v1/alerts/errors").json()["enabled"] is True


def test_a_webhook_to_a_network_not_allowed_is_refused(server: LiveServer) -> None:
    for url, reason in (
        ("http://10.0.0.1/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://127.0.0.2:9/hook", "loopback"),
        ("file:///etc/passwd", "http or https"),
    ):
        body = {"name": "ssrf", "target": "heavy", "metric": "p99_ms", "threshold": 1.0, "webhook_url": url}
        r = server.post(f"{server.url}/api/v1/alerts", json=body)
        assert r.status_code == 400 and reason in r.json()["error"], (url, r.text)
