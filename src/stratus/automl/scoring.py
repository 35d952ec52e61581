"""The AutoML metrics, one definition for the cross-validation folds and the test split (numpy, and
scikit-learn's ROC AUC): f1_macro and accuracy on labels, roc_auc on class scores, rmse and r2 on values."""

from __future__ import annotations

from typing import Any

import numpy as np

from stratus.automl.params import LOWER_IS_BETTER
from stratus.training.evaluate import classification_metrics, regression_metrics
from stratus.types import Array


def score(metric: str, y_true: Array, predicted: Array, scores: Array | None, classes: int) -> float:
    """``predicted``: labels (classification) or values (regression); ``scores``: per-class probabilities or
    logits, [rows, classes], needed by roc_auc only."""
    if metric in ("rmse", "r2"):
        return float(regression_metrics(np.asarray(y_true), np.asarray(predicted, dtype=np.float64))[metric])
    if metric == "roc_auc":
        from sklearn.metrics import roc_auc_score

        if scores is None:
            raise ValueError("roc_auc needs class scores")
        probabilities = softmax(np.asarray(scores, dtype=np.float64))
        if classes == 2:
            return float(roc_auc_score(y_true, probabilities[:, 1]))
        value: Any = roc_auc_score(y_true, probabilities, multi_class="ovr", labels=list(range(classes)))
        return float(value)
    names = [str(i) for i in range(classes)]
    metrics = classification_metrics(np.asarray(y_true), np.asarray(predicted), names)
    return float(metrics["macro_f1" if metric == "f1_macro" else "accuracy"])


def softmax(scores: Array) -> Array:
    """Rows that already are probabilities (sum 1, none negative) stay as they are; logits become them."""
    if scores.min() >= 0 and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    result: Array = shifted / shifted.sum(axis=1, keepdims=True)
    return result


def better(metric: str, a: float, b: float) -> bool:
    """Whether score ``a`` beats ``b`` for this metric."""
    return a < b if metric in LOWER_IS_BETTER else a > b
