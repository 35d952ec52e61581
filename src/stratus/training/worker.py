"""The training child: ``python -m stratus.training.worker --job DIR --dataset - --threads N``.

It reads DIR/request.json, trains, verifies the ONNX export against the framework on the test split,
and writes DIR/model.onnx, DIR/result.json and plots. Progress goes to stdout as JSON lines, which the
server persists. It never touches the metadata DB: the server registers the result, so a crash or
kill here can leave nothing half-registered.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from stratus import __version__, framing
from stratus.training.datasets import ParsedDataset, parse, reference_of, schema_of
from stratus.training.drift_reference import REFERENCE_FILE, layout_for
from stratus.training.evaluate import classification_metrics, confusion_png, regression_metrics
from stratus.training.params import SEQUENCE_MODELS, SKLEARN_MODELS, TrainRequest


def report(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def one_hot(values: Any, categories: list[list[str]]) -> Any:
    columns = []
    for j, cats in enumerate(categories):
        index = {c: i for i, c in enumerate(cats)}
        block = np.zeros((values.shape[0], len(cats)), dtype=np.float32)
        for row, value in enumerate(values[:, j]):
            position = index.get(str(value))
            if position is not None:
                block[row, position] = 1.0
        columns.append(block)
    return np.concatenate(columns, axis=1)


def split(X: Any, y: Any, fraction: float, seed: int, classify: bool) -> tuple[Any, Any, Any, Any]:
    from sklearn.model_selection import train_test_split

    stratify = y if classify and np.bincount(y).min() >= 2 else None
    result: tuple[Any, Any, Any, Any] = train_test_split(X, y, test_size=fraction, random_state=seed, stratify=stratify)
    return result


def read_dataset(source: str) -> bytes:
    """``-`` is stdin: the server pipes the decrypted dataset, so no plain copy is written to disk."""
    return sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()


def write_training_graph(
    job_dir: Path, model: Any, image_shape: tuple[int, int, int] | None, features: int, classify: bool
) -> None:
    """Keep the torch network next to its export, so the version can be pruned or distilled later."""
    from stratus.training.graph import graph_of

    shape = list(image_shape) if image_shape is not None else [features]
    graph = graph_of(model.body, shape, classify=classify, preprocess=model.preprocess, resize=model.resize)
    for name, content in graph.to_files().items():
        (job_dir / name).write_bytes(content)


def write_reference(
    job_dir: Path, parsed: ParsedDataset, train_rows: Any, inputs: list[str], outputs: list[str], served: Any
) -> None:
    """The drift reference: a sample of the rows the model was trained on, and its outputs on the test split.
    Auxiliary: a reference that cannot be built fails nothing (drift then builds one from the dataset)."""
    try:
        layout = layout_for(schema_of(parsed), inputs, outputs)
        served_values = np.asarray(served).ravel()
        reference = reference_of(parsed, layout, train_rows, source="training split", outputs=served_values)
        (job_dir / REFERENCE_FILE).write_bytes(reference.to_bytes())
    except Exception as exc:
        report({"event": "log", "message": f"no drift reference kept: {type(exc).__name__}: {exc}"})


def run(job_dir: Path, data: bytes, threads: int) -> None:
    spec = json.loads((job_dir / "request.json").read_text())
    request = TrainRequest.model_validate(spec["request"])
    resume = None
    if spec.get("framed"):  # a data-parallel job: the dataset, and the checkpoint an earlier attempt left
        bundle = framing.unpack(data)
        data, resume = bundle["dataset"], bundle.get("checkpoint")
    dataset = spec["dataset"]
    params = request.params
    options = dataset.get("options", {})
    report({"event": "log", "message": f"loading dataset {dataset['name']} ({dataset['rows']} rows)"})
    parsed = parse(
        dataset["format"],
        data,
        target=dataset.get("target"),
        missing=options.get("missing", "error"),
        task=options.get("task"),
    )
    assert parsed.y is not None
    classify = parsed.task == "classification"
    rows = np.arange(parsed.rows)
    train_rows, test_rows, y_train, y_test = split(rows, parsed.y, params.test_split, params.seed, classify)
    fit = None
    if request.workers is not None:
        fit = partial(fit_distributed, request, job_dir, str(spec.get("job_id", job_dir.name)), resume)
    if request.model == "text_classifier":
        run_text_classifier(job_dir, parsed, train_rows, test_rows, y_train, y_test, request, fit)
        return
    if request.model == "fine_tune":  # MiniLM with a head: the text classifier's path, another pipeline
        from stratus.training.fine_tune import FILES
        from stratus.training.fine_tune import text_trainer as fine_tune_trainer

        train = fine_tune_trainer(request, job_dir, threads, report)
        run_text_classifier(job_dir, parsed, train_rows, test_rows, y_train, y_test, request, train=train, files=FILES)
        return
    if request.model in SEQUENCE_MODELS:  # rnn, transformer: text (the text classifier's path) or numeric sequences
        from stratus.training.sequence_trainers import run_numeric_sequence, text_trainer

        if parsed.text is not None:
            train = text_trainer(request, job_dir, threads, report)
            run_text_classifier(job_dir, parsed, train_rows, test_rows, y_train, y_test, request, train=train)
        else:
            run_numeric_sequence(job_dir, parsed, train_rows, test_rows, y_train, y_test, request, threads, report)
        return
    X_numeric = parsed.X.astype(np.float32)
    categories: list[list[str]] = []
    if parsed.categorical is not None:
        # One-hot categories are fitted on the training split only; unseen values encode as all zeros.
        categories = [
            sorted({str(v) for v in parsed.categorical[train_rows, j]}) for j in range(parsed.categorical.shape[1])
        ]
    X = np.concatenate([X_numeric, one_hot(parsed.categorical, categories)], axis=1) if categories else X_numeric
    X_train, X_test = X[train_rows], X[test_rows]
    report({"event": "log", "message": f"train {len(X_train)} rows, test {len(X_test)} rows ({parsed.task})"})

    from stratus.formats import compare_outputs, sklearn_to_onnx, torch_to_onnx

    privacy: dict[str, Any] | None = None  # DP-SGD's record (training/privacy.py), kept with the metrics
    if request.model in SKLEARN_MODELS and params.dp_epsilon is None:
        from stratus.training.sklearn_trainers import build_estimator

        estimator = build_estimator(request.model, parsed.task, params)
        report({"event": "epoch", "epoch": 1, "epochs": 1, "loss": None, "eta_s": 0})
        estimator.fit(X_train, y_train)
        converted = sklearn_to_onnx(estimator, X_test)
        framework = np.asarray(estimator.predict(X_test))
        output = "label" if classify else converted.signature.outputs[0].name
    else:
        import torch

        from stratus.training.torch_trainers import predict, setup_torch, train_torch

        torch.set_num_threads(threads)
        X_fit, y_fit, X_val, y_val = X_train, y_train, None, None
        if params.validation_split > 0:
            X_fit, X_val, y_fit, y_val = split(X_train, y_train, params.validation_split, params.seed, classify)
        task, classes, image_shape = parsed.task, len(parsed.classes), parsed.image_shape
        if fit is not None:
            setup = setup_torch(
                request.model,
                X_fit,
                y_fit,
                X_val,
                y_val,
                task=task,
                classes=classes,
                image_shape=image_shape,
                params=params,
            )
            model = fit(setup)
        elif params.dp_epsilon is not None:  # DP-SGD: logistic_regression trains as a torch linear model
            from stratus.training.privacy import train_private

            model, privacy = train_private(
                request.model,
                X_fit,
                y_fit,
                X_val,
                y_val,
                task=task,
                classes=classes,
                image_shape=image_shape,
                params=params,
                report=report,
            )
        else:
            model = train_torch(
                request.model,
                X_fit,
                y_fit,
                X_val,
                y_val,
                task=task,
                classes=classes,
                image_shape=image_shape,
                params=params,
                report=report,
            )
        names = ("logits", "label") if classify else ("prediction",)
        # Images: height and width are dynamic; the model resizes them to its training size.
        extra = {"input": {2: "height", 3: "width"}} if parsed.image_shape is not None else None
        converted = torch_to_onnx(model, X_test[:4], output_names=names, dynamic_axes_extra=extra, rtol=1e-4, atol=1e-4)
        framework = predict(model, X_test, classify)
        output = "label" if classify else "prediction"
        write_training_graph(job_dir, model, parsed.image_shape, X_train.shape[1], classify)

    import onnxruntime as ort

    onnx_bytes = converted.onnx_bytes
    feeds = {converted.signature.inputs[0].name: X_test}
    if categories:
        from stratus.formats.compose import CATEGORICAL_INPUT, NUMERIC_INPUT, with_one_hot_front

        assert parsed.categorical is not None
        onnx_bytes = with_one_hot_front(onnx_bytes, X_numeric.shape[1], categories)
        feeds = {CATEGORICAL_INPUT: parsed.categorical[test_rows].astype(str).astype(object)}
        if X_numeric.shape[1]:
            feeds[NUMERIC_INPUT] = X_numeric[test_rows]
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    served = session.run([output], feeds)[0]
    # The artifact is what gets served: it must reproduce the framework on the whole test split.
    compare_outputs(framework.reshape(served.shape), served, what="test split", exact=classify, rtol=1e-4, atol=1e-4)
    if classify:
        metrics = classification_metrics(y_test, served, parsed.classes)
        (job_dir / "confusion_matrix.png").write_bytes(confusion_png(metrics["confusion_matrix"], parsed.classes))
    else:
        metrics = regression_metrics(y_test, served)
    if privacy is not None:
        metrics.update({"dp_epsilon": privacy["epsilon"], "dp_delta": privacy["delta"], "privacy": privacy})
    (job_dir / "model.onnx").write_bytes(onnx_bytes)
    write_reference(job_dir, parsed, train_rows, list(feeds), [o.name for o in converted.signature.outputs], served)
    evaluation = {"classes": parsed.classes, "test_predictions": served.ravel().tolist(), "seed": params.seed}
    (job_dir / "evaluation.json").write_text(json.dumps(evaluation))
    result = {
        "metrics": metrics,
        "task": parsed.task,
        "source": f"trainer:{request.model}",
        "stratus_version": __version__,
        "categories": dict(zip(parsed.categorical_names, categories, strict=True)),
    }
    (job_dir / "result.json").write_text(json.dumps(result))
    headline = {k: v for k, v in metrics.items() if isinstance(v, float)}
    report({"event": "done", "metrics": headline})


def fit_distributed(request: TrainRequest, job_dir: Path, job_id: str, resume: bytes | None, setup: Any) -> Any:
    """Train a torch trainer's network data-parallel on the Ray cluster (training/distributed.py)."""
    from stratus.training.distributed import train_distributed

    assert request.workers is not None
    return train_distributed(
        setup,
        request.params,
        workers=request.workers,
        cpus_per_worker=request.cpus_per_worker,
        memory_mb_per_worker=request.memory_mb_per_worker,
        job_dir=job_dir,
        job_id=job_id,
        report=report,
        resume=resume,
    )


def run_text_classifier(
    job_dir: Path,
    parsed: Any,
    train_rows: Any,
    test_rows: Any,
    y_train: Any,
    y_test: Any,
    request: TrainRequest,
    fit: Callable[[Any], Any] | None = None,
    train: Callable[..., Any] | None = None,
    files: Sequence[str] = ("tokenizer.json", "classifier.onnx"),
) -> None:
    """Train a text model (``train``: the text classifier's train_text by default; the sequence trainers and
    fine_tune pass theirs, which export a pipeline of ``files``) and write its evaluation and result."""
    import torch

    from stratus.training.text_trainer import train_text

    if train is None:
        torch.set_num_threads(1)
    texts = [str(t) for t in parsed.text[:, 0]]
    served = (train or train_text)(
        [texts[i] for i in train_rows],
        y_train,
        [texts[i] for i in test_rows],
        parsed.classes,
        request.params,
        job_dir,
        report,
        fit,
    )
    metrics = classification_metrics(y_test, served, parsed.classes)
    (job_dir / "confusion_matrix.png").write_bytes(confusion_png(metrics["confusion_matrix"], parsed.classes))
    write_reference(job_dir, parsed, train_rows, ["text"], ["label", "logits"], served)
    evaluation = {"classes": parsed.classes, "test_predictions": served.ravel().tolist(), "seed": request.params.seed}
    (job_dir / "evaluation.json").write_text(json.dumps(evaluation))
    result = {
        "metrics": metrics,
        "task": parsed.task,
        "source": f"trainer:{request.model}",
        "stratus_version": __version__,
        "format": "pipeline",
        "files": list(files),
    }
    (job_dir / "result.json").write_text(json.dumps(result))
    report({"event": "done", "metrics": {k: v for k, v in metrics.items() if isinstance(v, float)}})


def child_main(work: Callable[[Path, bytes, int], None]) -> None:
    """The command line every job child shares: ``--job DIR --dataset FILE|- --threads N``. A failure is
    reported as an error event (the job's reason) and exit status 1."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--dataset", required=True, help="the input file, or - for stdin")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    try:
        work(args.job, read_dataset(args.dataset), args.threads)
    except Exception as exc:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        report({"event": "error", "message": str(message)})
        traceback.print_exc()
        sys.exit(1)


def main() -> None:
    child_main(run)


if __name__ == "__main__":
    main()
