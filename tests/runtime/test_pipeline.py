from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onnx_factory import EMBEDDING_TABLE, affine_model, embedding_lookup_model, word_tokenizer_json
from stratus.errors import InvalidInput
from stratus.registry import RegistryService
from stratus.runtime.pipeline import PipelineRunner, PipelineSpec
from stratus.security.encryption import Keyring
from stratus.store import ArtifactStore, Database

EMBEDDER = {
    "kind": "pipeline",
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [
        {"name": "embedding", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "token_count", "datatype": "INT64", "shape": [-1]},
    ],
    "steps": [
        {"op": "tokenize", "file": "tokenizer.json", "input": "text", "max_length": 3},
        {
            "op": "onnx",
            "file": "encoder.onnx",
            "inputs": {"input_ids": "input_ids"},
            "outputs": {"last_hidden_state": "tokens"},
        },
        {"op": "mean_pool", "input": "tokens", "mask": "attention_mask", "output": "pooled"},
        {"op": "l2_normalize", "input": "pooled", "output": "embedding"},
    ],
}
FILES = {"tokenizer.json": word_tokenizer_json(), "encoder.onnx": embedding_lookup_model()}


def expected_embedding(ids: list[int]) -> np.ndarray:
    pooled = EMBEDDING_TABLE[ids].mean(axis=0)
    return pooled / np.linalg.norm(pooled)


def runner(spec: dict = EMBEDDER) -> PipelineRunner:  # type: ignore[type-arg]
    return PipelineRunner(PipelineSpec.parse(json.dumps(spec).encode()), FILES.__getitem__, lambda ref: b"", threads=1)


def test_embedder_pipeline_pads_pools_and_normalises() -> None:
    text = np.array(["hello world", "stratus", "hello unknownword stratus world"], dtype=object)
    pipeline = runner()
    out = pipeline.run_checked(pipeline.check_inputs({"text": text}))
    np.testing.assert_allclose(out["embedding"][0], expected_embedding([2, 3]), rtol=1e-6)
    np.testing.assert_allclose(out["embedding"][1], expected_embedding([4]), rtol=1e-6)  # padding is ignored
    np.testing.assert_allclose(out["embedding"][2], expected_embedding([2, 1, 4]), rtol=1e-6)  # truncated to 3
    assert out["token_count"].tolist() == [2, 1, 3]


def test_ensemble_average_and_vote() -> None:
    spec = {
        "kind": "pipeline",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [
            {"name": "mean", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "best", "datatype": "INT64", "shape": [-1]},
            {"name": "voted", "datatype": "INT64", "shape": [-1]},
        ],
        "steps": [
            {"op": "onnx", "file": "a.onnx", "inputs": {"x": "x"}, "outputs": {"y": "ya"}},
            {"op": "onnx", "model": {"name": "b", "version": 1}, "inputs": {"x": "x"}, "outputs": {"y": "yb"}},
            {"op": "average", "inputs": ["ya", "yb"], "output": "mean"},
            {"op": "argmax", "input": "mean", "output": "best"},
            {"op": "argmax", "input": "ya", "output": "la"},
            {"op": "argmax", "input": "yb", "output": "lb"},
            {"op": "argmax", "input": "x", "output": "lx"},
            {"op": "vote", "inputs": ["la", "lb", "lx"], "output": "voted"},
        ],
    }
    files = {"a.onnx": affine_model(scale=1.0, offset=0.0)}
    refs = {("b", 1): affine_model(scale=-1.0, offset=0.0)}
    pipeline = PipelineRunner(
        PipelineSpec.parse(json.dumps(spec).encode()), files.__getitem__, lambda r: refs[(r.name, r.version)], threads=1
    )
    x = np.array([[1.0, 5.0, 2.0], [3.0, 0.0, -1.0]], dtype=np.float32)
    out = pipeline.run_checked(pipeline.check_inputs({"x": x}))
    np.testing.assert_allclose(out["mean"], 0.0)
    assert out["best"].tolist() == [0, 0]
    # a says argmax(x), b says argmin(x), x says argmax(x): the majority is argmax(x)
    assert out["voted"].tolist() == [1, 0]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda s: s["steps"].pop(1), "reads ['tokens']"),
        (lambda s: s["outputs"].append({"name": "nope", "datatype": "FP32", "shape": [-1]}), "no step produces"),
        (lambda s: s["steps"].append({"op": "explode", "input": "x", "output": "y"}), "invalid pipeline spec"),
        (lambda s: s["steps"][1].update(file="../../etc/passwd"), "invalid file name"),
        (lambda s: s["steps"][1].update(model={"name": "x", "version": 1}), "exactly one of 'file' or 'model'"),
        (lambda s: s.update(kind="graph"), "invalid pipeline spec"),
    ],
)
def test_bad_specs_are_refused(mutate, needle: str) -> None:  # type: ignore[no-untyped-def]
    spec = json.loads(json.dumps(EMBEDDER))
    mutate(spec)
    with pytest.raises(InvalidInput, match=needle.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        PipelineSpec.parse(json.dumps(spec).encode())


def test_registry_registers_and_verifies_pipelines(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate()
    registry = RegistryService(db, ArtifactStore(tmp_path / "a", Keyring.generate()))
    info = registry.register_pipeline("embedder", json.dumps(EMBEDDER).encode(), dict(FILES), task="embedding")
    assert info.format == "pipeline" and sorted(info.files) == ["encoder.onnx", "tokenizer.json"]
    assert [s.name for s in info.signature.inputs] == ["text"]
    assert registry.read_file(info, "tokenizer.json") == FILES["tokenizer.json"]
    with pytest.raises(InvalidInput, match=r"missing \['encoder.onnx'\]"):
        registry.register_pipeline("broken", json.dumps(EMBEDDER).encode(), {"tokenizer.json": FILES["tokenizer.json"]})
    with pytest.raises(InvalidInput, match="tokenizer"):
        registry.register_pipeline(
            "broken", json.dumps(EMBEDDER).encode(), {**FILES, "tokenizer.json": b"{not a tokenizer"}
        )
    assert [m.name for m in registry.list_models()] == ["embedder"]
    registry.delete_model("embedder")
    assert list(registry.artifacts.digests()) == []
