"""Properties of the server process itself: no torch, persistence, crash safety."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import LiveServer, scaled, start_server
from onnx_factory import affine_model

pytestmark = pytest.mark.slow

IRIS_ROW = {
    "inputs": [
        {
            "name": "input",
            "shape": [2, 4],
            "datatype": "FP32",
            "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3],
        }
    ]
}


def test_no_torch_in_the_serving_process(live_server: LiveServer) -> None:
    for _ in range(5):
        r = live_server.post(f"{live_server.url}/v2/models/iris/infer", json=IRIS_ROW)
        assert r.status_code == 200
    r = live_server.post(
        f"{live_server.url}/v1/models/digits:predict", json={"instances": np.zeros((1, 1, 8, 8)).tolist()}
    )
    assert r.status_code == 200
    maps = Path(f"/proc/{live_server.pid}/maps").read_text()
    assert "onnxruntime" in maps  # the check can see libraries at all
    assert "libtorch" not in maps and "/torch/" not in maps


def test_restart_on_the_same_home_serves_the_same(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_server(home, None)
    try:
        r = server.post(
            f"{server.url}/api/v1/models/affine/versions", files={"file": ("a.onnx", affine_model(scale=4.0))}
        )
        assert r.status_code == 201
        server.put(f"{server.url}/api/v1/models/affine/aliases/production", json={"version": 1})
        body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
        before = server.post(f"{server.url}/v2/models/affine/infer", json=body).json()
    finally:
        server.stop()
    server = start_server(home, None)
    try:
        after = server.post(f"{server.url}/v2/models/affine/infer", json=body).json()
        assert after == before
        assert after["outputs"][0]["data"] == [5.0, 9.0, 13.0]
        assert server.get(f"{server.url}/api/v1/models/affine").json()["aliases"] == {"production": 1}
    finally:
        server.stop()


def test_kill_9_during_upload_leaves_no_version_and_no_orphan(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_server(home, None)
    try:
        payload = affine_model() + b"\x00" * (8 * 1024 * 1024)
        boundary = "stratusboundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        total = len(head) + len(payload) + len(f"\r\n--{boundary}--\r\n")
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                (
                    f"POST /api/v1/models/crash/versions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                    f"Content-Length: {total}\r\n\r\n"
                ).encode()
                + head
                + payload[: len(payload) // 2]
            )
            time.sleep(0.5)  # the server is now mid-upload
            os.kill(server.pid, signal.SIGKILL)
            server.process.wait(timeout=scaled(10))
    finally:
        server.stop(kill=True)
    server = start_server(home, None)
    try:
        assert server.get(f"{server.url}/api/v1/models/crash").status_code == 404
        assert server.get(f"{server.url}/api/v1/models").json()["models"] == []
        assert stored_blobs(home) == set()
        assert not list((home / "artifacts" / "tmp").iterdir())
    finally:
        server.stop()


@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.15, 0.4])
def test_kill_9_at_any_point_of_a_registration_leaves_a_consistent_store(tmp_path: Path, delay_s: float) -> None:
    """The whole body is sent, then the server dies after a delay: before, during or after the blob
    write and the row insert. After restart the version is either complete and servable, or absent,
    and no blob is left that no version references."""
    home = tmp_path / "home"
    server = start_server(home, None)
    payload = affine_model(scale=7.0)
    try:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=scaled(5)) as client:
            request = client.build_request("POST", "/api/v1/models/crash/versions", files={"file": ("m.onnx", payload)})
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                head = f"POST {request.url.raw_path.decode()} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in request.headers.items() if k.lower() != "host")
                sock.sendall(head.encode() + b"\r\n" + request.read())
                time.sleep(delay_s)
                os.kill(server.pid, signal.SIGKILL)
                server.process.wait(timeout=scaled(10))
    finally:
        server.stop(kill=True)
    server = start_server(home, None)
    try:
        versions = server.get(f"{server.url}/api/v1/models/crash/versions")
        blobs = stored_blobs(home)
        if versions.status_code == 404:
            assert blobs == set()
        else:
            [version] = versions.json()["versions"]
            assert blobs == {version["digest"][7:]}
            body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]}
            r = server.post(f"{server.url}/v2/models/crash/infer", json=body)
            assert r.json()["outputs"][0]["data"] == [8.0, 8.0, 8.0]
        assert not list((home / "artifacts" / "tmp").iterdir())
    finally:
        server.stop()


def test_duplicate_version_registration_race_over_http(live_server: LiveServer) -> None:
    """Eight clients register version 1 of the same model at once: exactly one wins, the rest get 409,
    and only the winner's bytes are stored."""
    from concurrent.futures import ThreadPoolExecutor

    def register(scale: float) -> int:
        files = {"file": ("m.onnx", affine_model(scale=scale))}
        r = live_server.post(
            f"{live_server.url}/api/v1/models/race/versions", files=files, data={"version": "1"}, timeout=scaled(30)
        )
        return r.status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(register, [float(i + 2) for i in range(8)]))
    assert sorted(codes) == [201] + [409] * 7
    versions = live_server.get(f"{live_server.url}/api/v1/models/race/versions").json()["versions"]
    assert [v["version"] for v in versions] == [1]
    blob = live_server.home / "artifacts" / "sha256" / versions[0]["digest"][7:9] / versions[0]["digest"][7:]
    assert blob.is_file()
    stored = stored_blobs(live_server.home)
    referenced = {
        digest[7:]
        for m in live_server.get(f"{live_server.url}/api/v1/models").json()["models"]
        for v in live_server.get(f"{live_server.url}/api/v1/models/{m['name']}/versions").json()["versions"]
        for digest in (v["digest"], *v["files"].values())
    }
    assert stored == referenced  # the seven losers left no blob behind


def stored_blobs(home: Path) -> set[str]:
    """Names of the blobs in a home's artifact store, after checking each has its wrapped key and no key
    is left without its blob."""
    names = {p.name for p in (home / "artifacts" / "sha256").glob("??/*")}
    blobs = {n for n in names if not n.endswith(".key")}
    assert {n.removesuffix(".key") for n in names - blobs} == blobs
    return blobs
