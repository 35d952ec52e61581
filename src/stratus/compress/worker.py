"""The compression child: ``python -m stratus.compress.worker --job DIR --dataset - --threads N``.

Stdin carries a bundle (stratus/framing.py) with the parent's artifact, its files and, when the method
needs it, the training dataset, all decrypted in memory by the server. DIR/request.json says what to do.
Every method runs, then the parent and every variant are measured here, one after another with the same
threads, and DIR/result.json, the variants' files and DIR/report.png are written. Like the training child
it never touches the metadata DB: the server registers the variants, all or none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stratus.compress import evaluate
from stratus.compress.models import Data, Model, Predictor
from stratus.framing import unpack
from stratus.training.worker import child_main, report, split
from stratus.types import Array

ONNX_METHODS = ("quantize-dynamic", "quantize-static", "fp16", "optimize")
TIMING_ROUNDS = 3


def load_data(request: dict[str, Any], bundle: dict[str, bytes]) -> Data:
    source = request["data"]
    if source["source"] == "corpus":
        from stratus.compress.corpus import split as corpus_split

        train, held_out = corpus_split(limit_held_out=source.get("held_out", 600))
        return Data(np.array(train, dtype=object), None, np.array(held_out, dtype=object), None)
    from stratus.training.datasets import builtin_npz, parse

    if source["source"] == "builtin":
        parsed = parse("npz", builtin_npz(source["builtin"]))
    else:
        record = source["record"]
        options = record.get("options", {})
        parsed = parse(
            record["format"],
            bundle["dataset"],
            target=record.get("target"),
            missing=options.get("missing", "error"),
            task=options.get("task"),
        )
    assert parsed.y is not None
    X = parsed.X.astype(np.float32) * np.float32(source.get("input_scale", 1.0))
    classify = request["kind"] == "classifier"
    train, test, y_train, y_test = split(
        np.arange(parsed.rows), parsed.y, source.get("test_split", 0.25), source.get("seed", 0), classify
    )
    return Data(X[train], np.asarray(y_train), X[test], np.asarray(y_test))


def calibration_feeds(
    parent: Model, onnx_file: str | None, data: Data, request: dict[str, Any], samples: int, batch: int = 32
) -> Iterator[dict[str, Array]]:
    """What the parent's ONNX model (``onnx_file`` of a pipeline, or the model itself) is fed for a sample
    of the training rows, a batch at a time."""
    rng = np.random.default_rng(0)
    rows = data.x_train[rng.permutation(len(data.x_train))[:samples]]
    if parent.format != "pipeline":
        for start in range(0, len(rows), batch):
            yield {request["input"]: rows[start : start + batch]}
        return
    from stratus.runtime.pipeline import PipelineRunner, PipelineSpec

    assert onnx_file is not None
    runner = PipelineRunner(PipelineSpec.parse(parent.artifact), parent.files.__getitem__, lambda ref: b"", threads=1)
    for start in range(0, len(rows), batch):
        yield runner.feeds_of({request["input"]: rows[start : start + batch]}, onnx_file)


def transform_onnx(
    method: str,
    params: dict[str, Any],
    onnx_bytes: bytes,
    data: Data | None,
    request: dict[str, Any],
    work: Path,
    calibration: Callable[[], Iterator[dict[str, Array]]] | None = None,
) -> tuple[bytes, dict[str, Any]]:
    from stratus.compress import onnx_methods

    if method == "quantize-dynamic":
        return onnx_methods.quantize_dynamic(onnx_bytes, params, work, calibration)
    if method == "quantize-static":
        assert data is not None
        rng = np.random.default_rng(0)
        rows = data.x_train[rng.permutation(len(data.x_train))[: params["samples"]]]
        return onnx_methods.quantize_static(onnx_bytes, params, request["input"], rows, work)
    if method == "fp16":
        return onnx_methods.to_fp16(onnx_bytes)
    return onnx_methods.optimize(onnx_bytes, work)


def compress(
    method: str, params: dict[str, Any], parent: Model, data: Data, request: dict[str, Any], work: Path
) -> Model:
    if method in ONNX_METHODS:
        if parent.format == "pipeline":
            files, recipe = dict(parent.files), dict[str, Any]()
            for name in request["onnx_files"]:
                calibration = _calibration(parent, name, data, request, params)
                files[name], recipe = transform_onnx(
                    method, params, parent.files[name], data, request, work, calibration
                )
            return Model("pipeline", parent.artifact, files, method, params, recipe)
        artifact, recipe = transform_onnx(
            method, params, parent.artifact, data, request, work, _calibration(parent, None, data, request, params)
        )
        return Model("onnx", artifact, {}, method, params, recipe)
    if method == "distill" and request["kind"] == "embedding":
        from stratus.compress.distill_text import distill_minilm

        variant: Model = distill_minilm(parent, params, data, request, report)
        if params.get("int8", True):
            variant = _int8_student(variant, data, request, work)
        return variant
    return retrain(method, params, parent, data, request)


def _int8_student(student: Model, data: Data, request: dict[str, Any], work: Path) -> Model:
    """The trained student through the dynamic int8 recipe (smoothed on the same training text), so the
    variant is both shallower and int8; its recipe keeps the student's fields and adds the int8 one."""
    from stratus.compress import onnx_methods

    report({"event": "log", "message": "distill: quantizing the student (dynamic int8)"})
    files = dict(student.files)
    recipe: dict[str, Any] = {}
    for name in request["onnx_files"]:
        feeds = _calibration(student, name, data, request, {})
        files[name], recipe = onnx_methods.quantize_dynamic(student.files[name], {}, work, feeds)
    return Model(
        student.format, student.artifact, files, student.method, student.params, {**student.recipe, "int8": recipe}
    )


def _calibration(
    parent: Model, onnx_file: str | None, data: Data, request: dict[str, Any], params: dict[str, Any]
) -> Callable[[], Iterator[dict[str, Array]]] | None:
    """Calibration feeds on demand, for the methods that use them (today: smoothing before dynamic int8)."""
    if len(data.x_train) == 0:
        return None
    samples = int(params.get("calibration_samples", 256))
    return lambda: calibration_feeds(parent, onnx_file, data, request, samples)


def retrain(method: str, params: dict[str, Any], parent: Model, data: Data, request: dict[str, Any]) -> Model:
    import torch

    from stratus.compress import torch_methods as tm
    from stratus.training.graph import TrainingGraph
    from stratus.training.params import GRAPH_FILE, WEIGHTS_FILE

    torch.set_num_threads(request["threads"])
    graph = TrainingGraph.from_files(parent.files[GRAPH_FILE], parent.files[WEIGHTS_FILE])
    assert data.y_train is not None
    notes: list[str] = []
    if method == "prune":
        if params["mode"] == "structured":
            model, recipe = tm.structured_prune(graph, params["ratio"])
        else:
            model, recipe = tm.unstructured_prune(graph, params["ratio"])
        tm.fine_tune(
            model,
            data.x_train,
            data.y_train,
            epochs=params["finetune_epochs"],
            lr=params["lr"],
            report=report,
            label="prune",
            keep_zeros=params["mode"] == "unstructured",
        )
        recipe["sparsity"] = tm.sparsity(model)
        if params["mode"] == "unstructured":
            notes.append(
                f"unstructured pruning leaves {recipe['sparsity']:.0%} of the weights zero but keeps every dense "
                "shape, so it brings no CPU speedup by itself"
            )
    else:
        teacher = Predictor(parent, {**request, "output": graph.output_names[0]}, request["threads"])
        logits = teacher.all(data.x_train)
        model = tm.student_of(graph, params["width"], seed=0)
        tm.fine_tune(
            model,
            data.x_train,
            data.y_train,
            epochs=params["epochs"],
            lr=params["lr"] or 2e-3,
            report=report,
            label="distill",
            teacher_logits=logits,
            temperature=params["temperature"],
            alpha=params["alpha"],
        )
        recipe = {
            "teacher_parameters": tm.count_parameters(graph.model),
            "student_parameters": tm.count_parameters(model),
            "width": params["width"],
        }
    recipe["parameters"] = tm.count_parameters(model)
    artifact, graph_files = tm.export(model, graph, data.x_test[:4])
    return Model("onnx", artifact, {}, method, params, recipe, notes, extra_files=graph_files)


def judge(parent: Model, variants: list[Model], data: Data, request: dict[str, Any]) -> dict[str, Any]:
    kind, threads, budget = request["kind"], request["threads"], request["budget"]
    models = [parent, *variants]
    predictors = [Predictor(model, request, threads) for model in models]
    qualities: list[dict[str, float]] = []
    parent_top = parent_embeddings = None
    for model, predict in zip(models, predictors, strict=True):
        report({"event": "log", "message": f"evaluating {model.method} on {len(data.x_test)} held-out rows"})
        outputs = predict.all(data.x_test, batch=64)
        if kind == "embedding":
            if parent_embeddings is None:
                parent_embeddings, parent_top = outputs, evaluate.top_k(outputs)
            assert parent_top is not None
            qualities.append(evaluate.embedding_quality(outputs, parent_embeddings, parent_top))
        elif kind == "classifier":
            assert data.y_test is not None
            qualities.append(evaluate.classifier_quality(outputs.ravel(), data.y_test))
        else:
            assert data.y_test is not None
            qualities.append(evaluate.regressor_quality(outputs, data.y_test))
    # Timed in alternating rounds, best of each kept, so a burst of load elsewhere on the machine cannot
    # favour whichever model happened to run during a quiet moment.
    report({"event": "log", "message": f"timing {len(models)} models in {TIMING_ROUNDS} alternating rounds"})
    seconds = float(request.get("timing_seconds", 1.0))
    timings = [evaluate.best_timing([evaluate.measure(p, data.x_test, seconds=seconds)]) for p in predictors]
    for _ in range(TIMING_ROUNDS - 1):
        timings = [
            evaluate.best_timing([t, evaluate.measure(p, data.x_test, seconds=seconds)])
            for t, p in zip(timings, predictors, strict=True)
        ]
    rows: list[dict[str, Any]] = []
    for model, quality, timing in zip(models, qualities, timings, strict=True):
        row: dict[str, Any] = {
            "method": model.method,
            "params": model.params,
            "recipe": model.recipe,
            "size_bytes": model.size_bytes,
            "quality": quality,
            "p50_ms_batch1": timing.p50_ms_batch1,
            "throughput_batch32": timing.throughput_batch32,
            "notes": list(model.notes),
        }
        if model is not parent:
            row["quality_drop"] = evaluate.quality_drop(kind, quality, qualities[0])
            row["within_budget"] = row["quality_drop"] <= budget
            row["speedup"] = timing.throughput_batch32 / timings[0].throughput_batch32
            row["size_ratio"] = model.size_bytes / parent.size_bytes
            if model.method == "fp16" and model.recipe.get("nodes") == 0:
                row["notes"].append("no operator of this model has an fp16 kernel, so the variant computes in fp32")
            elif model.method == "fp16" and row["speedup"] < 1.0:
                row["notes"].append(
                    f"fp16 runs at {row['speedup']:.2f}x the fp32 speed on this CPU, which has no fast fp16 "
                    "arithmetic; it halves the artifact size only"
                )
        rows.append(row)
    variants_rows = rows[1:]
    best = evaluate.recommend(variants_rows, budget, rows[0]["throughput_batch32"])
    return {
        "model": request["model"],
        "parent_version": request["version"],
        "kind": kind,
        "accuracy_budget": budget,
        "threads": threads,
        "evaluation_rows": len(data.x_test),
        "timing": {"rounds": TIMING_ROUNDS, "seconds_per_round": seconds, "batch": 32},
        "data_source": request["data"]["source"],
        "parent": rows[0],
        "variants": variants_rows,
        "recommendation": {"method": best["method"]} if best else None,
    }


def run(job_dir: Path, blob: bytes, threads: int) -> None:
    """``threads`` comes from the command line; the request's own ``threads`` (the user's) is what the
    timings use, so the figures are comparable with serving."""
    request = json.loads((job_dir / "request.json").read_text())
    bundle = unpack(blob)
    files = {name[5:]: data for name, data in bundle.items() if name.startswith("file:")}
    parent = Model(request["format"], bundle["artifact"], files)
    data = load_data(request, bundle)
    report(
        {"event": "log", "message": f"evaluation data: {len(data.x_test)} held-out rows ({request['data']['source']})"}
    )
    variants = []
    for step, method in enumerate(request["methods"], start=1):
        report({"event": "log", "message": f"{method}: compressing"})
        variants.append(compress(method, request["params"][method], parent, data, request, job_dir))
        report({"event": "step", "step": step, "steps": len(request["methods"]), "method": method})
    result = judge(parent, variants, data, request)
    outputs = []
    for index, variant in enumerate(variants):
        entry: dict[str, Any] = {"method": variant.method, "format": variant.format, "artifact": f"v{index}.artifact"}
        (job_dir / entry["artifact"]).write_bytes(variant.artifact)
        entry["files"] = {}
        for number, (name, content) in enumerate({**variant.files, **variant.extra_files}.items()):
            entry["files"][name] = f"v{index}.f{number}"
            (job_dir / entry["files"][name]).write_bytes(content)
        outputs.append(entry)
    (job_dir / "report.png").write_bytes(evaluate.plot_png(result))
    (job_dir / "result.json").write_text(json.dumps({"report": result, "variants": outputs}))
    report({"event": "done", "recommendation": result["recommendation"]})


def main() -> None:
    child_main(run)


if __name__ == "__main__":
    main()
