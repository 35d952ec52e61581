"""A real `stratus serve` on S3 (moto on loopback): kill -9 in the middle of an upload leaves no referenced
partial blob, and the next start's garbage collection removes what the upload left."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from conftest import LiveServer, as_admin, make_settings, scaled, start_server
from onnx_factory import affine_model
from stratus.api import create_app
from stratus.security.encryption import Keyring, read_key_file
from stratus.store.s3 import S3ArtifactStore

PREFIX = "stratus"


def big_model(megabytes: int) -> bytes:
    """y = x + sum(W), W a large all-zero initializer: a valid model whose file is ``megabytes`` MB."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    count = megabytes * 1024 * 1024 // 4
    weights = helper.make_tensor("w", TensorProto.FLOAT, [count], vals=bytes(count * 4), raw=True)
    nodes = [
        helper.make_node("ReduceSum", ["w"], ["total"], keepdims=0),
        helper.make_node("Add", ["x", "total"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "big", [x], [y], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="stratus-tests")
    model.ir_version = 8
    return model.SerializeToString()


def _listing(client: Any, bucket: str) -> tuple[list[str], list[str], list[str]]:
    """(blob digests, temporary keys, unfinished multipart uploads) under the store's prefix."""
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/").get("Contents", [])]
    uploads = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    blobs = sorted("sha256:" + k.rsplit("/", 1)[-1] for k in keys if k.startswith(f"{PREFIX}/sha256/"))
    return blobs, sorted(k for k in keys if k.startswith(f"{PREFIX}/tmp/")), uploads


def _predict(server: LiveServer, model: str) -> list[float]:
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
    r = server.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=scaled(20))
    assert r.status_code == 200, r.text
    data: list[float] = r.json()["outputs"][0]["data"]
    return data


def test_kill_9_during_an_upload_to_s3_leaves_no_referenced_partial_blob(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, bucket = s3_server.client, s3_server.create_bucket()
    home = tmp_path / "home"
    env = {**s3_server.env, "STRATUS_ARTIFACTS": f"s3://{bucket}/{PREFIX}"}
    server = start_server(home, None, env=env)
    try:
        small = affine_model()
        r = server.post(f"{server.url}/api/v1/models/small/versions", files={"file": ("small.onnx", small)})
        assert r.status_code == 201, r.text
        assert _predict(server, "small") == [3.0, 5.0, 7.0]
        small_digest = "sha256:" + hashlib.sha256(small).hexdigest()
        assert _listing(client, bucket) == ([small_digest], [], [])

        big = big_model(24)  # three 8 MiB parts: the upload takes a while, and is seen in its middle
        failed: list[BaseException] = []

        def upload() -> None:
            try:
                server.post(
                    f"{server.url}/api/v1/models/big/versions", files={"file": ("big.onnx", big)}, timeout=scaled(60)
                )
            except httpx.TransportError as exc:  # the server died under the request: expected
                failed.append(exc)

        uploader = threading.Thread(target=upload)
        uploader.start()
        deadline = time.monotonic() + scaled(60)
        while not _listing(client, bucket)[2]:  # an unfinished multipart upload: the server is mid-upload
            assert uploader.is_alive(), "the upload ended before the server was seen uploading"
            assert time.monotonic() < deadline, "the server never started uploading"
            time.sleep(0.01)
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(timeout=scaled(10))
        uploader.join(timeout=scaled(30))
        assert failed, "the upload request should have died with its server"

        blobs, temporary, uploads = _listing(client, bucket)
        big_digest = "sha256:" + hashlib.sha256(big).hexdigest()
        if big_digest in blobs:  # the kill came after the blob was published (a busy machine): it must be whole
            keyring = Keyring(read_key_file(home / "master.key"))
            assert S3ArtifactStore(client, bucket, PREFIX, keyring).read(big_digest) == big
        else:  # nothing under the digest, so no row can reference a partial blob; the upload is left for GC
            assert uploads or temporary, "the killed upload is left behind for the collector"
        print(f"left by kill -9: {len(uploads)} unfinished multipart upload(s), {len(temporary)} temporary object(s)")
    finally:
        server.stop(kill=True)

    # The next start on this home collects (a grace period of 0: this test's server was the only writer). In
    # process: the same Platform.start a server runs, without paying for another interpreter.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = make_settings(home, artifacts=env["STRATUS_ARTIFACTS"], artifact_gc_grace_seconds=0)
    with TestClient(create_app(settings)) as restarted:
        as_admin(restarted)
        assert restarted.get("/api/v1/models/big").status_code == 404
        body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
        served = restarted.post("/v2/models/small/infer", json=body)
        assert served.status_code == 200 and served.json()["outputs"][0]["data"] == [3.0, 5.0, 7.0]
        assert _listing(client, bucket) == ([small_digest], [], [])  # the orphan is gone, the referenced blob kept
