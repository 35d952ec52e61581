"""The top-k ensemble: the refit members put together as a pipeline (runtime/pipeline.py), the platform's
existing way to serve several models as one. Classifiers average their probabilities, then argmax (torch
networks their logits; a mix of the two votes on labels, since logits and probabilities do not average);
regressors average their predictions. The pipeline is run here on the test split with the serving runtime,
and registered by the server through the usual pipeline checks (every ONNX file through the gate, a warm-up
run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stratus.automl.scoring import score
from stratus.formats import inspect_onnx
from stratus.training.datasets import ParsedDataset
from stratus.types import Array

FOLDER = "ensemble"


def build(
    job_dir: Path, refits: list[tuple[Any, Path]], parsed: ParsedDataset, rows: Array, y: Array, metric: str
) -> dict[str, Any] | None:
    """Write DIR/ensemble/pipeline.json and its member files; return its description and test score, or
    None when the members cannot be combined (fewer than two of one output shape)."""
    infos = [(trial, inspect_onnx((folder / "model.onnx").read_bytes()).signature, folder) for trial, folder in refits]
    first = infos[0][1]
    classify = parsed.task == "classification"
    scores = ""  # the class scores every member outputs, averaged (probabilities, or the torch networks' logits)
    if classify:
        members = infos
        for name in ("probabilities", "logits"):
            if all(any(o.name == name for o in sig.outputs) for _, sig, _ in members):
                scores = name
        averaged = bool(scores)
        if not averaged and metric == "roc_auc":
            return None  # a vote has no class scores to rank by
    else:
        members = [m for m in infos if len(m[1].outputs[0].shape) == len(first.outputs[0].shape)]
        averaged = True
    if len(members) < 2 or any(m[1].inputs != first.inputs for m in members):
        return None
    steps: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    for index, (_, signature, folder) in enumerate(members):
        file = f"member{index}.onnx"
        files[file] = (folder / "model.onnx").read_bytes()
        if classify:
            out = {scores: f"p{index}"} if averaged else {"label": f"l{index}"}
        else:
            out = {signature.outputs[0].name: f"y{index}"}
        steps.append({"op": "onnx", "file": file, "inputs": {i.name: i.name for i in first.inputs}, "outputs": out})
    count = len(members)
    outputs: list[dict[str, Any]]
    if classify and averaged:
        classes = len(parsed.classes)
        steps.append({"op": "average", "inputs": [f"p{i}" for i in range(count)], "output": scores})
        steps.append({"op": "argmax", "input": scores, "output": "label"})
        outputs = [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": scores, "datatype": "FP32", "shape": [-1, classes]},
        ]
    elif classify:
        steps.append({"op": "vote", "inputs": [f"l{i}" for i in range(count)], "output": "label"})
        outputs = [{"name": "label", "datatype": "INT64", "shape": [-1]}]
    else:
        steps.append({"op": "average", "inputs": [f"y{i}" for i in range(count)], "output": "prediction"})
        outputs = [{"name": "prediction", "datatype": "FP32", "shape": list(first.outputs[0].shape)}]
    spec = {"kind": "pipeline", "inputs": [i.to_dict() for i in first.inputs], "outputs": outputs, "steps": steps}
    folder = job_dir / FOLDER
    folder.mkdir(exist_ok=True)
    spec_bytes = json.dumps(spec).encode()
    (folder / "pipeline.json").write_bytes(spec_bytes)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    test_score = _score(spec_bytes, files, parsed, first, rows, y, metric)
    return {
        "members": [{"trial": trial.number, "family": trial.family, "params": trial.params} for trial, _, _ in members],
        "combine": "average" if averaged else "vote",
        "test_score": test_score,
        "files": sorted(files),
    }


def _score(
    spec_bytes: bytes,
    files: dict[str, bytes],
    parsed: ParsedDataset,
    signature: Any,
    rows: Array,
    y: Array,
    metric: str,
) -> float:
    """The pipeline's test score, run by the serving runtime exactly as it will be served."""
    from stratus.runtime.pipeline import PipelineRunner, PipelineSpec

    runner = PipelineRunner(PipelineSpec.parse(spec_bytes), files.__getitem__, lambda ref: b"", threads=1)
    names = [i.name for i in signature.inputs]
    feeds: dict[str, Array] = {}
    if "categorical" in names:
        assert parsed.categorical is not None
        feeds["categorical"] = parsed.categorical[rows].astype(str).astype(object)
        if "numeric" in names:
            feeds["numeric"] = parsed.X.astype(np.float32)[rows]
    else:
        X = parsed.X.astype(np.float32)[rows]
        feeds[names[0]] = X
    out = runner.run_checked(runner.check_inputs(feeds))
    if parsed.task == "classification":
        scores = out.get("probabilities", out.get("logits"))
        return score(metric, y, out["label"].ravel(), scores, len(parsed.classes))
    return score(metric, y, out["prediction"].ravel(), None, 0)


def estimate(members: list[Any], payload: Any, metric: str) -> dict[str, float] | None:
    """The ensemble against its best member on the confirmation stage's folds (the second split, which no
    choice was made on): each member's held-out outputs there, pooled over the folds, scored alone (the first
    member) and averaged (values; class probabilities, then argmax). None unless every member was confirmed.
    An estimate, decided without the test split: the served pipeline averages torch networks' logits, or votes
    when scikit-learn and torch members mix."""
    k = payload.split_folds
    if len(members) < 2 or any(sorted(m.held_out) != list(range(k)) for m in members):
        return None
    rows = np.concatenate([payload.folds[k + i][1] for i in range(k)])
    y = np.asarray(payload.y)[rows]
    pooled = [np.concatenate([m.held_out[i] for i in range(k)]) for m in members]

    def scored(outputs: Array) -> float:
        if payload.task != "classification":
            return score(metric, y, outputs, None, 0)
        return score(metric, y, outputs.argmax(axis=1), outputs, payload.classes)

    return {"single": scored(pooled[0]), "ensemble": scored(np.mean(pooled, axis=0))}
