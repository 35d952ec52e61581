"""DP-SGD on breast_cancer (docs/privacy.md): logistic regression at epsilon 1.0 and 0.1 (delta 1e-5), many runs,
since each run's noise is fresh (its generator is seeded secretly, never from the job's seed), against the same
trainer without a budget and scikit-learn's LogisticRegression. The splits are the training child's.

    python -m benchmarks.privacy [--runs 20] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.report import DOC, write_section
from stratus.training.params import parse_train_request
from stratus.training.privacy import train_private
from stratus.training.torch_trainers import predict, train_torch

BEGIN, END = "<!-- bench-privacy:begin -->", "<!-- bench-privacy:end -->"


def splits() -> tuple[Any, ...]:
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X.astype(np.float32), y, test_size=0.25, random_state=0, stratify=y
    )
    X_fit, X_val, y_fit, y_val = train_test_split(X_train, y_train, test_size=0.1, random_state=0, stratify=y_train)
    return X_train, y_train, X_fit, y_fit, X_val, y_val, X_test, y_test


def run(params: dict[str, Any], data: tuple[Any, ...]) -> tuple[float, dict[str, Any] | None, float]:
    _, _, X_fit, y_fit, X_val, y_val, X_test, y_test = data
    request = parse_train_request({"dataset": "cancer", "model": "logistic_regression", "params": params})
    kwargs: dict[str, Any] = {"task": "classification", "classes": 2, "image_shape": None, "params": request.params}
    started = time.perf_counter()
    privacy = None
    if request.params.dp_epsilon is not None:
        model, privacy = train_private(
            "logistic_regression", X_fit, y_fit, X_val, y_val, report=lambda _e: None, **kwargs
        )
    else:
        model = train_torch("logistic_regression", X_fit, y_fit, X_val, y_val, report=lambda _e: None, **kwargs)
    seconds = time.perf_counter() - started
    return float((predict(model, X_test, True) == y_test).mean()), privacy, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--write", action="store_true", help="record the table in docs/privacy.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = splits()
    X_train, y_train, *_, X_test, y_test = data
    sklearn = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
    rows = [
        "| run | accuracy: min / median / mean | epsilon spent (max) | noise multiplier | steps | seconds a run |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| scikit-learn LogisticRegression (no DP) | {sklearn.score(X_test, y_test):.3f} | - | - | - | - |",
    ]
    for label, params in (
        ("torch logistic regression, lr 0.05 (no DP)", {"lr": 0.05}),
        ("DP-SGD, epsilon 1.0, delta 1e-5", {"dp_epsilon": 1.0, "dp_delta": 1e-5}),
        ("DP-SGD, epsilon 0.1, delta 1e-5", {"dp_epsilon": 0.1, "dp_delta": 1e-5}),
    ):
        results = [run(params, data) for _ in range(args.runs)]
        accuracies = [r[0] for r in results]
        privacy = [r[1] for r in results if r[1] is not None]
        spent = f"{max(p['epsilon'] for p in privacy):.4f}" if privacy else "-"
        sigma = f"{privacy[0]['noise_multiplier']:.2f}" if privacy else "-"
        steps = f"{privacy[0]['steps']} of {privacy[0]['steps_planned']}" if privacy else "-"
        rows.append(
            f"| {label} | {min(accuracies):.3f} / {statistics.median(accuracies):.3f} / "
            f"{statistics.mean(accuracies):.3f} | {spent} | {sigma} | {steps} | "
            f"{statistics.median(r[2] for r in results):.2f} |"
        )
        print(rows[-1], flush=True)
    block = "\n".join(
        [
            BEGIN,
            f"breast_cancer (426 training rows: 383 fit, 43 validation; 143 test), logistic regression with the "
            f"defaults (20 epochs, batch 32, Adam, lr 0.05 with a budget), {args.runs} runs each, one thread "
            "(`make bench-privacy`):",
            "",
            *rows,
            END,
        ]
    )
    print(block)
    if args.write:
        write_section(BEGIN, END, block, heading="## Figures", doc=DOC.parent / "privacy.md")


if __name__ == "__main__":
    main()
