"""The batcher under real concurrency: every response belongs to its own request."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from conftest import LiveServer, scaled

pytestmark = pytest.mark.slow

REQUESTS = 2000


def test_2000_concurrent_requests_each_get_their_own_result(live_server: LiveServer) -> None:
    artifact = live_server.get(f"{live_server.url}/api/v1/models/digits/versions/1/artifact").content
    session = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    images = rng.random((REQUESTS, 1, 8, 8), dtype=np.float32)
    expected_logits, expected_labels = session.run(["logits", "label"], {"input": images})

    async def one(client: httpx.AsyncClient, i: int) -> dict:  # type: ignore[type-arg]
        body = {
            "id": f"r{i}",
            "inputs": [
                {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": images[i].ravel().tolist()}
            ],
        }
        r = await client.post("/v2/models/digits/infer", json=body)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def main() -> list[dict]:  # type: ignore[type-arg]
        # One connection per request, so all 2,000 are in the server at once; httpx's pool is slow to
        # hand out connections to thousands of waiters.
        limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
        async with httpx.AsyncClient(
            base_url=live_server.url, headers=live_server.headers, limits=limits, timeout=scaled(60)
        ) as client:
            return await asyncio.wait_for(asyncio.gather(*(one(client, i) for i in range(REQUESTS))), scaled(120))

    results = asyncio.run(main())
    for i, result in enumerate(results):
        assert result["id"] == f"r{i}"
        outputs = {o["name"]: o for o in result["outputs"]}
        assert outputs["label"]["data"] == [int(expected_labels[i])]
        np.testing.assert_allclose(outputs["logits"]["data"], expected_logits[i], rtol=1e-4, atol=1e-5)
    metrics = live_server.get(f"{live_server.url}/metrics").text
    batched = [
        line for line in metrics.splitlines() if line.startswith('stratus_inference_batch_size_count{model="digits"')
    ]
    runs = float(batched[0].rsplit(" ", 1)[1])
    assert runs < REQUESTS  # requests really were merged into batches


def test_deadline_passes_in_the_queue_with_a_clear_error(live_server: LiveServer) -> None:
    body = {
        "parameters": {"timeout": 1},
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}],
    }
    r = live_server.post(f"{live_server.url}/v2/models/iris/infer", json=body)
    assert r.status_code == 504 and "deadline" in r.json()["error"]
    body["parameters"] = {"timeout": "soon"}
    r = live_server.post(f"{live_server.url}/v2/models/iris/infer", json=body)
    assert r.status_code == 400 and "microseconds" in r.json()["error"]


def test_a_bad_request_among_good_ones_fails_alone(live_server: LiveServer) -> None:
    good = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
    bad = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [5.1, 3.5, 1.4]}]}

    async def main() -> list[int]:
        async with httpx.AsyncClient(
            base_url=live_server.url, headers=live_server.headers, timeout=scaled(30)
        ) as client:
            responses = await asyncio.gather(
                *(client.post("/v2/models/iris/infer", json=bad if i % 10 == 3 else good) for i in range(200))
            )
            return [r.status_code for r in responses]

    codes = asyncio.run(main())
    assert codes == [400 if i % 10 == 3 else 200 for i in range(200)]
