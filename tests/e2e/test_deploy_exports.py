"""Endpoints through the CLI, the SDK and the OpenAI client; the Docker export served the way its
entrypoint runs it (without Docker); Kubernetes manifests; endpoints surviving a server restart."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
import yaml
from deploy_helpers import IRIS_BODY, create, delete, get, metric, register_copy, wait_for, wait_live
from dockerfile_parse import DockerfileParser
from kubernetes_validate import validate as k8s_validate
from openai import OpenAI

import kserve_schema
from conftest import LiveServer, free_port, run_cli, scaled, start_server
from stratus.sdk import Client

pytestmark = pytest.mark.slow

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)


@pytest.fixture(scope="module")
def server(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("exports") / "home", sample_cache)
    assert register_copy(server, "iris") == 2
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pack(server: LiveServer) -> str:
    """An endpoint over two versions of iris, 70/30, which the export tests package."""
    targets = [{"model": "iris", "version": "1", "weight": 70}, {"model": "iris", "version": "2", "weight": 30}]
    create(server, "pack", targets=targets)
    return "pack"


def _start_exported(folder: Path, key: str | None, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """What the image's ENTRYPOINT runs, from the exported folder, on a free loopback port."""
    port = free_port()
    env = {**os.environ}
    env.pop("STRATUS_ENDPOINT_KEY_SHA256", None)
    if key is not None:
        env["STRATUS_ENDPOINT_KEY_SHA256"] = hashlib.sha256(key.encode()).hexdigest()
    command = [sys.executable, "-m", "stratus.cli.endpoint_server", "--dir", str(folder / "endpoint")]
    log = folder.parent / "exported-server.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen([*command, "--port", str(port), *extra], env=env, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + scaled(60)
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    process.wait(scaled(10))
    raise AssertionError(f"the exported endpoint did not start: {log.read_text()[-2000:]}")


def test_docker_export_serves_v2_from_its_folder_without_a_database(
    server: LiveServer, pack: str, tmp_path: Path
) -> None:
    out = tmp_path / "context"
    run_cli("export", "docker", "pack", "--out", str(out), url=server.url)
    parser = DockerfileParser(path=str(out / "Dockerfile"))
    assert parser.baseimage == "python:3.12-slim"
    assert "torch" not in (out / "requirements.txt").read_text()
    manifest = orjson.loads((out / "endpoint" / "endpoint.json").read_bytes())
    assert [(r["version"], r["weight"]) for r in manifest["routes"]] == [(1, 70), (2, 30)]
    for line in (out / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split("  ")
        assert hashlib.sha256((out / path).read_bytes()).hexdigest() == digest
    assert not any(p.suffix in (".db", ".sqlite") for p in out.rglob("*"))

    key = "exported-endpoint-key"
    process, url = _start_exported(out, key)
    try:
        client = triton.InferenceServerClient(url.removeprefix("http://"))
        headers = {"Authorization": f"Bearer {key}"}  # tritonclient adds to the dict it is given: pass copies
        inp = triton.InferInput("input", list(ROWS.shape), "FP32")
        inp.set_data_from_numpy(ROWS, binary_data=True)
        wanted = [triton.InferRequestedOutput("probabilities", binary_data=True)]
        result = client.infer("pack", [inp], outputs=wanted, headers=dict(headers))
        direct = server.post(
            f"{server.url}/v2/models/iris/versions/1/infer",
            json={"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": ROWS.ravel().tolist()}]},
        ).json()
        expected = np.array(next(o for o in direct["outputs"] if o["name"] == "probabilities")["data"]).reshape(3, 3)
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-6)
        versions = {
            client.infer("pack", [inp], headers=dict(headers)).get_response()["model_version"] for _ in range(40)
        }
        assert versions == {"1", "2"}
        assert httpx.post(f"{url}/v2/models/pack/infer", json=IRIS_BODY, timeout=scaled(30)).status_code == 401
        assert httpx.get(f"{url}/v2/health/ready", timeout=scaled(30)).status_code == 200
        assert (
            "stratus_inference_requests_total" in httpx.get(f"{url}/metrics", headers=headers, timeout=scaled(30)).text
        )
        assert "libtorch" not in Path(f"/proc/{process.pid}/maps").read_text()
        client.close()
    finally:
        process.terminate()
        process.wait(scaled(10))


def test_the_exported_server_refuses_a_network_bind_without_a_key(
    server: LiveServer, pack: str, tmp_path: Path
) -> None:
    out = tmp_path / "context"
    with Client(server.url, api_key=server.admin_key) as sdk:
        sdk.export_docker("pack", out)
    command = [sys.executable, "-m", "stratus.cli.endpoint_server", "--dir", str(out / "endpoint"), "--host", "0.0.0.0"]
    env = {k: v for k, v in os.environ.items() if k != "STRATUS_ENDPOINT_KEY_SHA256"}
    result = subprocess.run(
        [*command, "--port", str(free_port())], capture_output=True, text=True, timeout=scaled(60), env=env
    )
    assert result.returncode != 0 and "refusing to serve on 0.0.0.0 without a key" in result.stderr


def test_export_of_a_model_that_forbids_downloads_is_refused(server: LiveServer) -> None:
    create(server, "locked", targets=[{"model": "digits"}])
    assert server.patch(f"{server.url}/api/v1/models/digits", json={"allow_download": False}).status_code == 200
    try:
        r = server.get(f"{server.url}/api/v1/endpoints/locked/export/docker")
        assert r.status_code == 403 and "allow_download" in r.json()["error"]
    finally:
        server.patch(f"{server.url}/api/v1/models/digits", json={"allow_download": True})
        delete(server, "locked")


def test_k8s_export_from_the_cli_validates(server: LiveServer, pack: str, tmp_path: Path) -> None:
    target = tmp_path / "pack.yaml"
    run_cli("export", "k8s", "pack", "--image", "registry.local/pack:1", "--out", str(target), url=server.url)
    documents = list(yaml.safe_load_all(target.read_text()))
    for document in documents[:3]:
        k8s_validate(document, "1.37.0", strict=True)
    assert documents[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/pack:1"
    assert documents[3]["kind"] == "InferenceService"
    kserve_schema.validate(documents[3])


def test_cli_manages_an_endpoint_through_its_life(server: LiveServer) -> None:
    created = orjson.loads(
        run_cli("endpoints", "create", "cli-ep", "-t", "iris:1", "--wait", "--json", url=server.url).stdout
    )
    assert created["revision"] == 1 and created["live"]["targets"][0]["version"] == 1
    assert "cli-ep" in run_cli("endpoints", "list", url=server.url).stdout
    run_cli("endpoints", "update", "cli-ep", "-t", "iris:1=50", "-t", "iris:2=50", "--wait", url=server.url)
    shown = run_cli("endpoints", "show", "cli-ep", url=server.url).stdout
    assert "iris:1" in shown and "iris:2" in shown and "50%" in shown
    rolled = orjson.loads(run_cli("endpoints", "rollback", "cli-ep", "--wait", "--json", url=server.url).stdout)
    assert rolled["revision"] == 3 and [t["version"] for t in rolled["live"]["targets"]] == [1]
    history = orjson.loads(run_cli("endpoints", "revisions", "cli-ep", "--json", url=server.url).stdout)
    assert [r["status"] for r in history] == ["superseded", "superseded", "live"]
    assert "rollout_started" in run_cli("endpoints", "events", "cli-ep", url=server.url).stdout
    bad = run_cli("endpoints", "create", "cli-bad", "-t", "iris=lots", url=server.url, check=False)
    assert bad.returncode == 1 and "whole number" in bad.stderr
    run_cli("endpoints", "delete", "cli-ep", url=server.url)
    assert server.get(f"{server.url}/api/v1/endpoints/cli-ep").status_code == 404


def test_openai_client_calls_a_text_endpoint(server: LiveServer, pack: str) -> None:
    with Client(server.url, api_key=server.admin_key) as sdk:
        sdk.create_endpoint("embed", [{"model": "minilm"}])
        sdk.wait_endpoint("embed")
    client = OpenAI(base_url=f"{server.url}/openai/v1", api_key=server.admin_key, max_retries=0)
    sentences = ["A replica served this sentence.", "Endpoints route to model versions."]
    through_endpoint = np.array([d.embedding for d in client.embeddings.create(model="embed", input=sentences).data])
    direct = np.array([d.embedding for d in client.embeddings.create(model="minilm", input=sentences).data])
    cosine = (
        (through_endpoint * direct).sum(axis=1)
        / np.linalg.norm(through_endpoint, axis=1)
        / np.linalg.norm(direct, axis=1)
    )
    assert through_endpoint.shape == (2, 384) and cosine.min() > 0.9999
    assert metric(server, "stratus_inference_requests_total", model="embed", protocol="openai") == 1
    listed = {m.id for m in client.models.list()}
    assert {"embed", "minilm"} <= listed and "pack" not in listed  # pack routes to iris, not a text model
    client.close()
    delete(server, "embed")


def test_endpoints_are_redeployed_after_a_restart_and_replicas_leave_with_a_killed_server(
    sample_cache: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first = start_server(home, sample_cache)
    try:
        create(first, "durable", targets=[{"model": "iris"}])
    finally:
        first.stop()
    second = start_server(home, sample_cache)
    try:
        endpoint = wait_live(second, "durable", revision=1)
        assert second.post(f"{second.url}/v2/models/durable/infer", json=IRIS_BODY).json()["model_version"] == "1"
        pids = [r["pid"] for t in get(second, "durable")["live"]["targets"] for r in t["replicas"]]
        assert pids and endpoint["state"] == "ready"
    finally:
        second.process.send_signal(signal.SIGKILL)
        second.process.wait(scaled(10))

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in pids)

    wait_for(gone, 5, "replicas to exit after their server was killed")
