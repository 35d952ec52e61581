"""The edge runner against a live cloud, one topology for the module: enroll a device, sync digits@production and
serve it; the cloud hands back the cases the runner is unsure of; tampered bundles are refused while the old one
keeps serving; the cloud stops: 0 failed requests; the runner is killed (-9) and starts offline from its last
good bundle; the cloud comes back and a new version is promoted: the runner switches with 0 failed requests;
telemetry buffered offline reaches the cloud's usage exactly once, a kill -9 between the cloud counting a batch
and the runner deleting it included; a revoked device gets 401; an edge key can do nothing else."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from edge_helpers import Load, Proxy, Runner, edge_env, start_cloud, start_runner
from sklearn.datasets import load_digits

from conftest import bearer, free_port, run_cli, scaled
from stratus_edge.cli import main as edge_main

pytestmark = pytest.mark.slow


def _body(images: np.ndarray) -> dict[str, Any]:
    batch = images.reshape(len(images), 1, 8, 8).astype(np.float32)
    return {
        "inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}]
    }


def _confidence(response: dict[str, Any]) -> np.ndarray:
    logits = np.array(next(o for o in response["outputs"] if o["name"] == "logits")["data"]).reshape(-1, 10)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    top: np.ndarray = (exp / exp.sum(axis=1, keepdims=True)).max(axis=1)
    return top


def _wait_for(check: Any, what: str, seconds: float = 30) -> Any:
    deadline = time.monotonic() + scaled(seconds)
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def world(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("edge")
    port = free_port()
    cloud = start_cloud(tmp / "home", sample_cache, port)
    proxy = Proxy(cloud.url)
    state = tmp / "device"
    w: dict[str, Any] = {"cloud": cloud, "proxy": proxy, "state": state, "home": tmp / "home", "port": port}
    w["sample_cache"] = sample_cache
    try:
        assert cloud.put(f"{cloud.url}/api/v1/models/digits/aliases/production", json={"version": 1}).status_code == 200
        w["predict_key"] = cloud.post(f"{cloud.url}/api/v1/keys", json={"scopes": ["predict"]}).json()["key"]
        token = cloud.post(f"{cloud.url}/api/v1/device-tokens", json={}).json()["token"]
        edge_main(["--state", str(state), "enroll", "--cloud", proxy.url, "--token", token, "--name", "till-1"])
        # Digits the model is sure of, and blends of two digits it is not (judged by the cloud, the same model).
        digits = load_digits()
        images = (digits.images / 16.0).astype(np.float32)
        rng = np.random.default_rng(0)
        blends = (images[rng.integers(0, len(images), 64)] + images[rng.integers(0, len(images), 64)]) / 2
        judged = cloud.post(f"{cloud.url}/v2/models/digits/infer", json=_body(blends)).json()
        confidence = _confidence(judged)
        w["sure"] = _body(images[:1])
        w["unsure"] = _body(blends[np.argmin(confidence)][None])
        assert confidence.min() < 0.6
        w["args"] = [
            "--model",
            "digits@production",
            "--interval",
            "0.3",
            "--forward-below",
            "0.6",
            "--forward-url",
            proxy.url,
            "--forward-key",
            w["predict_key"],
            "--deadline-ms",
            "1000",
        ]
        w["runner"] = start_runner(state, w["args"], {"model": "digits", "body": w["sure"]}, edge_env())
        w["served"] = 1  # inference requests the runners answered (each lands in telemetry)
        yield w
    finally:
        if "runner" in w:
            w["runner"].stop(kill=True)
        proxy.close()
        w["cloud"].stop()
        print(f"\nedge runner log: {state.parent}")


def _infer(w: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    r = httpx.post(f"{w['runner'].url}/v2/models/digits/infer", json=body, timeout=scaled(10))
    assert r.status_code == 200, r.text
    w["served"] += 1
    return r


def test_serves_the_synced_bundle_and_hands_hard_cases_to_the_cloud(world: dict[str, Any]) -> None:
    runner: Runner = world["runner"]
    print(f"first answer {runner.first_answer_s:.2f} s after the runner started (digits, synced from the cloud)")
    status = runner.status()
    assert status["bundle"] == "digits:1" and status["sync"]["cloud"] == "reachable"
    device = world["cloud"].get(f"{world['cloud'].url}/api/v1/devices").json()["devices"][0]
    assert device["name"] == "till-1" and device["encrypted_bundles"] and device["last_seen"]
    # On disk the bundle is encrypted to this device: no plain ONNX file in the state folder.
    plain = (world["sample_cache"] / "digits.onnx").read_bytes()
    stored = [p.read_bytes() for p in (world["state"] / "bundles").rglob("*.onnx")]
    assert stored and all(plain[:4096] not in data and plain[-4096:] not in data for data in stored)
    assert _infer(world, world["sure"]).headers["stratus-answered-by"] == "edge"
    r = _infer(world, world["unsure"])
    assert r.headers["stratus-answered-by"] == "cloud"
    assert r.json()["model_name"] == "digits"
    # V1 follows the same rule and codec.
    v1 = httpx.post(
        f"{runner.url}/v1/models/digits:predict",
        json={"instances": np.array(world["sure"]["inputs"][0]["data"]).reshape(1, 1, 8, 8).tolist()},
        timeout=scaled(10),
    )
    world["served"] += 1
    assert v1.status_code == 200 and v1.headers["stratus-answered-by"] == "edge"
    assert v1.json()["predictions"][0]["label"] == 0
    # The platform's errors, from the platform's table: an unknown model, a malformed request.
    missing = httpx.post(f"{runner.url}/v2/models/iris/infer", json=world["sure"], timeout=scaled(10))
    assert missing.status_code == 404 and missing.headers["stratus-error-kind"] == "not_found"
    bad = httpx.post(f"{runner.url}/v2/models/digits/infer", content=b"{", timeout=scaled(10))
    assert bad.status_code == 400 and "error" in bad.json()


def test_tampered_bundles_are_refused_and_the_cloud_stopping_fails_nothing(world: dict[str, Any]) -> None:
    runner: Runner = world["runner"]
    proxy: Proxy = world["proxy"]
    load = Load(f"{runner.url}/v2/models/digits/infer", world["sure"]).start()
    try:
        for how, reason in (("byte", "does not decrypt"), ("key", "signature")):
            proxy.tamper = how
            etag = f'"tampered-{how}"'
            refused = _wait_for(
                lambda etag=etag: [r for r in runner.status()["sync"]["refused"] if r["etag"] == etag],
                f"the {how} bundle refused",
            )
            assert reason in refused[-1]["reason"]
            assert runner.status()["bundle"] == "digits:1"
            # Refused once: its ETag is remembered, so the same bundle is not downloaded again in later rounds.
            contact = runner.status()["sync"]["last_contact"]
            for _ in range(2):
                contact = _wait_for(
                    lambda c=contact: (t := runner.status()["sync"]["last_contact"]) is not None and t > c and t,
                    "another sync round",
                )
            assert len([r for r in runner.status()["sync"]["refused"] if r["etag"] == etag]) == 1
        proxy.tamper = None
        # The refusal reaches the device's health in the cloud with its telemetry.
        _wait_for(
            lambda: (
                "signature" in world["cloud"].get(f"{world['cloud'].url}/api/v1/devices").json()["devices"][0]["health"]
            ),
            "the refusal in the device's health",
        )
        world["cloud"].stop()
        _wait_for(lambda: runner.status()["sync"]["cloud"] != "reachable", "the runner to notice the cloud is gone")
        before = load.ok
        _wait_for(lambda: load.ok > before + 50, "requests served with the cloud down")
        # A hard case with no cloud to answer: the local answer, once the deadline (1 s) has passed.
        proxy.hang.set()
        started = time.monotonic()
        r = _infer(world, world["unsure"])
        print(f"unsure digit with a hung cloud: local answer after {time.monotonic() - started:.2f} s (deadline 1 s)")
        assert r.headers["stratus-answered-by"] == "edge"
    finally:
        load.stop()
        proxy.hang.clear()
    world["served"] += load.ok
    assert load.failed == [] and load.versions == {"1"}


def test_offline_start_kill_during_upload_and_switch_on_promotion(world: dict[str, Any]) -> None:
    state: Path = world["state"]
    world["runner"].stop(kill=True)  # kill -9, lines written this instant included
    assert (state / "spool").exists()
    # Offline: the cloud is down; the runner starts from its last good bundle. It dies (SIGKILL) right after the
    # cloud counts its first telemetry batch, before deleting it: the worst moment for a crash.
    probe = {"model": "digits", "body": world["sure"]}
    runner = start_runner(state, world["args"], probe, edge_env(STRATUS_EDGE_FAULT="kill-after-upload"))
    world["served"] += 1
    print(f"offline start: first answer after {runner.first_answer_s:.2f} s")
    assert runner.status()["sync"]["cloud"] != "reachable"
    assert runner.status()["telemetry"]["pending_requests"] > 0
    world["cloud"] = start_cloud(world["home"], world["sample_cache"], world["port"])
    assert runner.process.wait(timeout=scaled(60)) == -9
    world["runner"] = runner = start_runner(state, world["args"], probe, edge_env())
    world["served"] += 1
    cloud = world["cloud"]
    load = Load(f"{runner.url}/v2/models/digits/infer", world["sure"]).start()
    try:
        digits = next(world["sample_cache"].glob("digits.onnx")).read_bytes()
        r = cloud.post(f"{cloud.url}/api/v1/models/digits/versions", files={"file": ("digits.onnx", digits)})
        assert r.status_code == 201, r.text
        version = r.json()["version"]
        promoted = time.monotonic()
        assert (
            cloud.put(f"{cloud.url}/api/v1/models/digits/aliases/production", json={"version": version}).status_code
            == 200
        )
        _wait_for(lambda: runner.status()["bundle"] == f"digits:{version}", "the switch", 10)
        print(f"switched to version {version} {time.monotonic() - promoted:.2f} s after the promotion")
        before = load.ok
        _wait_for(lambda: load.ok > before + 20, "requests on the new version")
    finally:
        load.stop()
    world["served"] += load.ok
    assert load.failed == [] and load.versions == {"1", str(version)}


def test_telemetry_reaches_usage_once_and_a_revoked_device_is_locked_out(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    runner: Runner = world["runner"]
    cloud = world["cloud"]
    _wait_for(lambda: runner.status()["telemetry"]["pending_requests"] == 0, "the spool to drain")

    def edge_usage() -> int:
        rows = cloud.get(f"{cloud.url}/api/v1/usage", params={"group_by": "kind,model"}).json()["rows"]
        return sum(r["requests"] for r in rows if r["group"] == {"kind": "edge", "model": "digits"})

    assert edge_usage() == world["served"]
    device = cloud.get(f"{cloud.url}/api/v1/devices").json()["devices"][0]
    assert device["bundle"].startswith("digits:") and device["health"] == "ok"
    # The same bundle by hand: `stratus export edge`, checked by `stratus-edge verify` with the published key.
    out = world["state"].parent / "exported"
    run_cli("export", "edge", "digits@production", "--out", str(out), url=cloud.url)
    published = httpx.get(f"{cloud.url}/.well-known/stratus-edge-key", timeout=scaled(30)).json()["public_key"]
    edge_main(["--state", str(world["state"].parent / "other-device"), "verify", str(out), "--trust-key", published])
    assert capsys.readouterr().out.startswith("ok: digits:")
    key = (world["state"] / "device.json").read_text()
    edge_key = __import__("json").loads(key)["key"]
    # An edge key syncs and reports, nothing else: no registering, no reading, in its project or any other.
    upload = cloud.request(
        "POST", f"{cloud.url}/api/v1/models/x/versions", headers=bearer(edge_key), files={"file": ("x.onnx", b"x")}
    )
    assert upload.status_code == 403
    assert httpx.get(f"{cloud.url}/api/v1/models", headers=bearer(edge_key), timeout=scaled(30)).status_code == 403
    assert (
        httpx.post(
            f"{cloud.url}/v2/models/digits/infer", headers=bearer(edge_key), json=world["sure"], timeout=scaled(30)
        ).status_code
        == 403
    )
    assert cloud.delete(f"{cloud.url}/api/v1/devices/{device['id']}").status_code == 200
    sync = httpx.get(
        f"{cloud.url}/api/v1/device/bundle", params={"model": "digits"}, headers=bearer(edge_key), timeout=scaled(30)
    )
    assert sync.status_code == 401
    _wait_for(lambda: "401" in runner.status()["sync"]["cloud"], "the runner to see its key revoked")
    # It keeps serving what it has.
    assert _infer(world, world["sure"]).headers["stratus-answered-by"] == "edge"
    shutil.rmtree(world["state"] / "spool", ignore_errors=True)
