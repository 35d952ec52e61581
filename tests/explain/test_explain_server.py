"""Explanations through the server: the V1 and V2 routes, the SDK, clear 4xx answers, the workers' bounds,
and that the server process itself never imports shap (it runs in the explanation workers).

One server for the module: a child process runs the real app (TestClient, as tests/test_layering.py does) so
its ``sys.modules`` is the server's own, not this test process's (which imports shap for other tests)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from conftest import scaled
from stratus.errors import DeadlineExceeded, RateLimited
from stratus.explain.methods import Request
from stratus.explain.pool import ExplainPool

_SERVER = """
import json, sys
from pathlib import Path
import numpy as np
from fastapi.testclient import TestClient
from stratus.platform import create_app
from stratus.sdk import Client
from stratus.settings import Settings

home, cache, folder = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
settings = Settings(home=home, sample_cache_dir=cache, allowed_hosts=["testserver"], intra_op_threads=1)
out = {}
with TestClient(create_app(settings)) as client:
    client.headers["Authorization"] = "Bearer " + settings.resolved_admin_key_file.read_text().strip()
    model = (folder / "cancer.onnx").read_bytes()
    assert client.post("/api/v1/models/cancer/versions", files={"file": ("m.onnx", model)}).status_code == 201
    csv = (folder / "train.csv").read_bytes()
    r = client.put("/api/v1/models/cancer/versions/1/reference", files={"file": ("train.csv", csv)})
    assert r.status_code == 200, r.text
    rows = np.load(folder / "rows.npy")
    out["predict"] = client.post("/v1/models/cancer:predict", json={"instances": rows.tolist()}).status_code
    out["modules_after_inference"] = sorted(m for m in sys.modules if m.split(".")[0] in ("shap", "numba"))
    r = client.post("/v1/models/cancer:explain", params={"output": "logit"}, json={"instances": rows.tolist()})
    out["v1"] = [r.status_code, r.json()]
    body = {"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32", "data": rows[0].tolist()}]}
    r = client.post("/v2/models/cancer/versions/1/explain", params={"target": 1}, json=body)
    out["v2"] = [r.status_code, r.json()]
    r = client.post("/v1/models/cancer:explain", json={"instances": rows[:, :29].tolist()})
    out["wrong_width"] = [r.status_code, r.json()]
    r = client.post("/v1/models/iris:explain", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
    out["no_background"] = [r.status_code, r.json()]
    r = client.post("/v1/models/cancer:explain", params={"method": "occlusion"}, json={"instances": rows.tolist()})
    out["wrong_method"] = [r.status_code, r.json()]
    r = client.post("/v1/models/cancer:explain", params={"method": "lime"}, json={"instances": rows.tolist()})
    out["unknown_method"] = r.status_code
    images = np.load(folder / "digits.npy")
    body = {"inputs": [{"name": "input", "shape": list(images.shape), "datatype": "FP32",
                        "data": images.ravel().tolist()}]}
    r = client.post("/v2/models/digits/explain", params={"patch": 2}, json=body)
    out["digits"] = [r.status_code, r.json()]
    files = [("file", ("pipeline.json", (folder / "pipeline.json").read_bytes()))]
    files += [("files", (name, (folder / name).read_bytes())) for name in ("tokenizer.json", "sentiment.onnx")]
    r = client.post("/api/v1/models/sentiment/versions", files=files, data={"format": "pipeline"})
    assert r.status_code == 201, r.text
    texts = ["the movie was good", "bad movie"]
    body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}]}
    r = client.post("/v2/models/sentiment/explain", json=body)
    out["text"] = [r.status_code, r.json()]
    sdk = Client("http://testserver", api_key="unused")
    sdk._http = client  # the SDK's calls through the app itself (TestClient is an httpx.Client)
    explanation = sdk.explain("cancer", rows[:1], output="logit", target=1)
    out["sdk"] = [list(explanation.attributions.shape), explanation.base_values.tolist(), explanation.additive]
    import contextlib
    from typer.testing import CliRunner
    import stratus.cli.explain as cli_explain
    from stratus.cli.app import app
    cli_explain.client = lambda url: contextlib.nullcontext(sdk)  # the CLI's calls through this app
    ran = CliRunner().invoke(app, ["explain", "cancer", "--data", str(folder / "rows.csv"), "--output", "logit",
                                   "--top", "3"], terminal_width=200)
    out["cli"] = [ran.exit_code, ran.output]
    out["modules_after_explain"] = sorted(m for m in sys.modules if m.split(".")[0] in ("shap", "numba"))
print(json.dumps(out))
"""


def _sentiment_pipeline(folder: Path) -> None:
    """A text classifier served as a pipeline: words, then the mean of each word's two class logits ("good"
    votes for class 1, "bad" for class 0, the other words for neither)."""
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, "good": 2, "bad": 3, "movie": 4, "the": 5, "was": 6}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    (folder / "tokenizer.json").write_text(tokenizer.to_str())
    table = np.zeros((len(vocab), 2), dtype=np.float32)
    table[vocab["good"]], table[vocab["bad"]] = [0, 3], [3, 0]
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["per_token"], axis=0)],
        "sentiment",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("per_token", TensorProto.FLOAT, ["batch", "sequence", 2])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (folder / "sentiment.onnx").write_bytes(model.SerializeToString())
    spec = {
        "kind": "pipeline",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}],
        "steps": [
            {"op": "tokenize", "file": "tokenizer.json", "input": "text"},
            {"op": "onnx", "file": "sentiment.onnx", "inputs": {"input_ids": "input_ids"},
             "outputs": {"per_token": "t"}},
            {"op": "mean_pool", "input": "t", "mask": "attention_mask", "output": "logits"},
        ],
    }  # fmt: skip
    (folder / "pipeline.json").write_text(json.dumps(spec))


@pytest.fixture(scope="module")
def served(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("explain")
    data = load_breast_cancer()
    x, y = data.data, data.target
    model = LogisticRegression(max_iter=5000).fit(x, y)
    onnx = to_onnx(model, x[:1].astype(np.float32), options={id(model): {"zipmap": False}}, target_opset=17)
    (folder / "cancer.onnx").write_bytes(onnx.SerializeToString())
    header = ",".join(f'"{n}"' for n in data.feature_names)
    (folder / "train.csv").write_text(header + "\n" + "\n".join(",".join(map(str, row)) for row in x[:300]) + "\n")
    np.save(folder / "rows.npy", x[300:303].astype(np.float32))
    (folder / "rows.csv").write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in x[300:302]) + "\n")
    from sklearn.datasets import load_digits

    np.save(folder / "digits.npy", (load_digits().data[:2] / 16.0).reshape(2, 1, 8, 8).astype(np.float32))
    _sentiment_pipeline(folder)
    result = subprocess.run(
        [sys.executable, "-c", _SERVER, str(folder / "home"), str(sample_cache), str(folder)],
        capture_output=True, text=True, timeout=scaled(200), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    served: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return served


def test_the_server_process_never_imports_shap(served: dict[str, Any]) -> None:
    assert served["predict"] == 200
    assert served["modules_after_inference"] == []
    assert served["modules_after_explain"] == []  # the explanations ran, in the workers


def test_v1_explains_each_row_additively_against_the_training_background(served: dict[str, Any]) -> None:
    status, body = served["v1"]
    assert status == 200, body
    attributions = np.array(body["attributions"])
    assert attributions.shape == (3, 30) and len(body["feature_names"]) == 30
    assert (body["method"], body["additive"], body["output_space"], body["background_rows"]) == (
        "kernel", True, "logit", 50,
    )  # fmt: skip
    gap = attributions.sum(axis=1) - (np.array(body["scores"]) - np.array(body["base_values"]))
    assert np.abs(gap).max() < 1e-3


def test_v2_and_the_sdk_explain_a_chosen_class(served: dict[str, Any]) -> None:
    status, body = served["v2"]
    assert status == 200, body
    assert (body["model_version"], body["targets"], np.array(body["attributions"]).shape) == ("1", [1], (1, 30))
    shape, base, additive = served["sdk"]
    assert shape == [1, 30] and len(base) == 1 and additive is True


def test_the_cli_draws_the_largest_attributions_of_each_row_as_bars(served: dict[str, Any]) -> None:
    code, output = served["cli"]
    assert code == 0, output
    rows = [line for line in output.splitlines() if line.startswith("row ")]
    assert len(rows) == 2 and all("logit of class" in r and "kernel" in r for r in rows)
    bars = [line for line in output.splitlines() if "│" in line]
    assert len(bars) == 6 and all("█" in line for line in bars), output  # --top 3 per row
    first = [float(line.rsplit(" ", 1)[1]) for line in bars[:3]]
    assert first == sorted(first, key=abs, reverse=True)


def test_image_models_get_per_pixel_occlusion_maps(served: dict[str, Any]) -> None:
    status, body = served["digits"]
    assert status == 200, body
    assert (body["kind"], body["method"], body["additive"], body["patch"]) == ("image", "occlusion", False, 2)
    maps = np.array(body["attributions"])
    assert maps.shape == (2, 1, 8, 8) and np.abs(maps).sum() > 0
    assert body["targets"] == [0, 1]  # the first two digits of the set, both predicted right


def test_text_classifiers_get_per_token_attributions(served: dict[str, Any]) -> None:
    status, body = served["text"]
    assert status == 200, body
    assert (body["kind"], body["method"], body["targets"]) == ("text", "occlusion", [1, 0])
    assert body["tokens"] == [["the", "movie", "was", "good"], ["bad", "movie"]]
    for tokens, attributions, word in zip(body["tokens"], body["attributions"], ("good", "bad"), strict=True):
        assert len(attributions) == len(tokens) and tokens[int(np.argmax(attributions))] == word
        assert all(a < 0 for t, a in zip(tokens, attributions, strict=True) if t != word)  # fewer words dilute it


def test_bad_requests_get_clear_4xx(served: dict[str, Any]) -> None:
    status, body = served["wrong_width"]
    assert status == 400 and "shape" in body["error"], body
    status, body = served["no_background"]
    assert status == 409 and "no background data" in body["error"], body
    status, body = served["wrong_method"]
    assert status == 400 and "does not explain tabular models" in body["error"], body
    assert served["unknown_method"] == 422


def test_the_pool_refuses_over_its_bound_and_stops_an_explanation_over_its_time_limit() -> None:
    """One worker, no queue: a second request while the first runs is refused at once (429); the first, the
    permutation method on a fresh worker (numba compiles shap's code: seconds), outlives a 1 s limit (504)."""
    pool = ExplainPool(workers=1, queue_size=0, timeout_s=1.0, start_timeout_s=scaled(60))
    x = load_breast_cancer().data
    model = LogisticRegression(max_iter=5000).fit(x, load_breast_cancer().target)
    onnx = to_onnx(model, x[:1].astype(np.float32), options={id(model): {"zipmap": False}}, target_opset=17)
    request = Request("tabular", "permutation", "X", "probabilities", "probabilities", "probability")
    meta = {"request": request.to_dict(), "digest": "d", "datatype": "FP32"}
    arrays = {"rows": x[:1], "background": x[:20]}

    async def both() -> list[BaseException | Any]:
        calls = [pool.run(meta, arrays, {"model": onnx.SerializeToString()}) for _ in range(2)]
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        first, second = asyncio.run(both())
    finally:
        pool.close()
    assert isinstance(first, DeadlineExceeded) and "limit of 1 s" in str(first)
    assert isinstance(second, RateLimited)


@pytest.mark.parametrize("cpu_share", [1.0, 0.001])
def test_a_worker_runs_idle_class_on_one_thread_and_pauses_in_proportion_to_its_share(cpu_share: float) -> None:
    """Every thread of a worker is in SCHED_IDLE (a BLAS thread started at numpy's import too, which does not
    inherit the class set later), its BLAS has one thread, and after an explanation the worker is kept out of
    the pool's slots for (1/share - 1) times its CPU time: at share 1 it is back at once."""
    pool = ExplainPool(workers=1, queue_size=0, timeout_s=scaled(60), start_timeout_s=scaled(60), cpu_share=cpu_share)
    x = load_breast_cancer().data
    model = LogisticRegression(max_iter=5000).fit(x, load_breast_cancer().target)
    onnx = to_onnx(model, x[:1].astype(np.float32), options={id(model): {"zipmap": False}}, target_opset=17)
    request = Request("tabular", "kernel", "X", "probabilities", "probabilities", "probability")
    meta = {"request": request.to_dict(), "digest": "d", "datatype": "FP32"}
    try:
        answer, _ = asyncio.run(
            pool.run(meta, {"rows": x[:2], "background": x[:20]}, {"model": onnx.SerializeToString()})
        )
        assert answer["ok"] and answer["cpu_s"] > 0
        back_at_once = pool._slots.qsize() == 1  # at share 0.001 the pause is 999 times the CPU time: seconds
        (worker,) = pool._started
        pid = worker.process.pid
        tasks = [int(p.name) for p in Path(f"/proc/{pid}/task").iterdir()]
        policies = {os.sched_getscheduler(t) for t in tasks}
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    finally:
        pool.close()
    assert back_at_once == (cpu_share == 1.0)
    assert len(tasks) >= 1 and policies == {os.SCHED_IDLE}
    assert b"OPENBLAS_NUM_THREADS=1" in environ
