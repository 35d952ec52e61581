"""One cross-validation fold of one configuration, in a trial's process: fit the platform's own trainer
(training/sklearn_trainers.py, training/torch_trainers.py) on the fold's training rows, score the held-out
rows, and measure the fitted model's size and one-row prediction time."""

from __future__ import annotations

import pickle
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from stratus.automl.scoring import score, softmax
from stratus.training.params import SKLEARN_MODELS, TrainParams
from stratus.types import Array


@dataclass
class Payload:
    """What every trial's process gets once, when it starts: the training split (the test split never
    reaches a trial) and the folds over it: the search's k, then the confirmation stage's k of a second,
    independent split (search.py)."""

    X: Array
    y: Array
    folds: list[tuple[Array, Array]]
    task: str
    classes: int
    image_shape: tuple[int, int, int] | None
    metric: str
    seed: int
    #: Folds per split: fold ``i`` belongs to split ``i // split_folds`` (0: a single split).
    split_folds: int = 0


def run_fold(payload: Payload, config: dict[str, Any], fold: int) -> dict[str, Any]:
    family = config["family"]
    # The second split's folds also train with another seed: the confirmation measures a configuration, not
    # one lucky initialisation of it.
    second = payload.split_folds > 0 and fold >= payload.split_folds
    params = TrainParams.model_validate({**config["params"], "seed": (payload.seed + second) % 2**31})
    train, held_out = payload.folds[fold]
    X_fit, y_fit, X_val, y_val = payload.X[train], payload.y[train], payload.X[held_out], payload.y[held_out]
    classify = payload.task == "classification"
    if family in SKLEARN_MODELS:
        from stratus.training.sklearn_trainers import build_estimator

        estimator = build_estimator(family, payload.task, params)
        started = time.perf_counter()
        estimator.fit(X_fit, y_fit)
        fit_s = time.perf_counter() - started

        def predict(rows: Array) -> Array:
            return np.asarray(estimator.predict(rows))

        scores = estimator.predict_proba(X_val) if payload.metric == "roc_auc" else None
        size = len(pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL))
    else:
        import torch

        from stratus.training.torch_trainers import train_torch
        from stratus.training.worker import split

        torch.set_num_threads(1)
        started = time.perf_counter()  # after the imports: a process's first torch fold loads torch
        X_inner, y_inner, X_watch, y_watch = X_fit, y_fit, None, None
        if params.validation_split > 0:  # as the training child does: the validation rows are not trained on
            X_inner, X_watch, y_inner, y_watch = split(X_fit, y_fit, params.validation_split, params.seed, classify)
        model = train_torch(
            family,
            X_inner,
            y_inner,
            X_watch,
            y_watch,
            task=payload.task,
            classes=payload.classes,
            image_shape=payload.image_shape,
            params=params,
            report=lambda event: None,
        )
        fit_s = time.perf_counter() - started

        def predict(rows: Array) -> Array:
            with torch.no_grad():
                out = model(torch.tensor(rows, dtype=torch.float32))
            return np.asarray(out[1].numpy() if classify else out.numpy())

        scores = None
        if payload.metric == "roc_auc":
            with torch.no_grad():
                scores = model(torch.tensor(X_val, dtype=torch.float32))[0].numpy()
        size = sum(p.numel() * p.element_size() for p in model.parameters())
    predicted = predict(X_val)
    value = score(payload.metric, y_val, predicted, scores, payload.classes)
    if not np.isfinite(value):
        raise ValueError(f"the fold's {payload.metric} is not a number")
    result: dict[str, Any] = {
        "score": value,
        "fit_s": fit_s,
        "size_bytes": int(size),
        "latency_ms": _latency_ms(predict, X_val[:1]),
    }
    if second:  # the held-out outputs, for the worker to estimate an ensemble of confirmed configurations
        if not classify:
            result["held_out"] = np.asarray(predicted, dtype=np.float64)
        elif family in SKLEARN_MODELS:
            result["held_out"] = np.asarray(estimator.predict_proba(X_val), dtype=np.float64)
        else:
            with torch.no_grad():
                logits = model(torch.tensor(X_val, dtype=torch.float32))[0].numpy()
            result["held_out"] = softmax(np.asarray(logits, dtype=np.float64))
    return result


def _latency_ms(predict: Any, row: Array) -> float:
    """The framework's time to predict one row, median of five: a guide to the served model's latency (the
    served ONNX is usually faster; the ranking between families holds)."""
    times = []
    for _ in range(5):
        started = time.perf_counter()
        predict(row)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000.0
