"""Metrics on the held-out test split, and the confusion-matrix plot (numpy and Pillow only)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from stratus.types import Array


def classification_metrics(y_true: Array, y_pred: Array, classes: list[str]) -> dict[str, Any]:
    k = len(classes)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (y_true.astype(np.int64), y_pred.astype(np.int64)), 1)
    tp = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    support = actual.astype(np.float64)
    return {
        "accuracy": float(tp.sum() / max(1, matrix.sum())),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / max(1.0, support.sum())),
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": matrix.tolist(),
        "test_size": int(matrix.sum()),
    }


def regression_metrics(y_true: Array, y_pred: Array) -> dict[str, Any]:
    error = y_pred.astype(np.float64).ravel() - y_true.astype(np.float64).ravel()
    mse = float(np.mean(error**2))
    variance = float(np.var(y_true))
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(error))),
        "r2": float(1 - mse / variance) if variance > 0 else 0.0,
        "test_size": int(error.size),
    }


def confusion_png(matrix: list[list[int]], classes: list[str], cell: int = 40) -> bytes:
    """A heatmap of the confusion matrix with counts, rows = true class, columns = predicted."""
    from PIL import Image, ImageDraw

    counts = np.array(matrix, dtype=np.float64)
    k = len(classes)
    margin = 60
    image = Image.new("RGB", (margin + k * cell + 10, margin + k * cell + 10), "white")
    draw = ImageDraw.Draw(image)
    peak = counts.max() or 1.0
    for i in range(k):
        for j in range(k):
            shade = int(255 - 200 * counts[i, j] / peak)
            box = (margin + j * cell, margin + i * cell, margin + (j + 1) * cell - 1, margin + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255), outline=(200, 200, 200))
            draw.text(
                (box[0] + 4, box[1] + cell // 3), str(int(counts[i, j])), fill="black" if shade > 120 else "white"
            )
        draw.text((4, margin + i * cell + cell // 3), classes[i][:8], fill="black")
        draw.text((margin + i * cell + 4, margin - 16), classes[i][:5], fill="black")
    draw.text((margin, 4), "predicted ->", fill="black")
    draw.text((4, 24), "true", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
