"""Judging variants against their parent, in one process with the same threads: quality on held-out data,
artifact size, p50 latency at batch 1 and throughput at batch 32. Then the recommendation and the plot."""

from __future__ import annotations

import io
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stratus.types import Array

Predict = Callable[[Array], Array]


@dataclass(frozen=True)
class Timing:
    p50_ms_batch1: float
    throughput_batch32: float


def measure(predict: Predict, rows: Array, *, seconds: float = 2.0, max_runs: int = 400) -> Timing:
    """Latency of one-row calls and rows/s of 32-row calls, each bounded in runs and in time."""
    single = rows[:1]
    batch = rows[np.arange(32) % len(rows)]
    for _ in range(3):
        predict(single)
        predict(batch)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(latencies) < max_runs and time.perf_counter() < deadline:
        started = time.perf_counter()
        predict(single)
        latencies.append(time.perf_counter() - started)
    runs, started = 0, time.perf_counter()
    deadline = started + seconds
    while runs < max_runs and (runs < 3 or time.perf_counter() < deadline):
        predict(batch)
        runs += 1
    elapsed = time.perf_counter() - started
    return Timing(statistics.median(latencies) * 1000.0, runs * 32 / elapsed)


def best_timing(timings: list[Timing]) -> Timing:
    """The best of several measurements: interference from elsewhere only ever makes a run slower."""
    return Timing(min(t.p50_ms_batch1 for t in timings), max(t.throughput_batch32 for t in timings))


def classifier_quality(labels: Array, truth: Array) -> dict[str, float]:
    from stratus.training.evaluate import classification_metrics

    classes = [str(i) for i in range(int(max(labels.max(), truth.max())) + 1)]
    metrics = classification_metrics(truth, labels, classes)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def regressor_quality(predictions: Array, truth: Array) -> dict[str, float]:
    return {"rmse": float(np.sqrt(np.mean((predictions.ravel() - truth.ravel()) ** 2)))}


def top_k(embeddings: Array, k: int = 10) -> Array:
    """Each row's k nearest other rows by cosine similarity."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    result: Array = np.argsort(-similarity, axis=1)[:, :k]
    return result


def embedding_quality(embeddings: Array, parent: Array, parent_top: Array) -> dict[str, float]:
    """Cosine to the parent's embedding of the same text, and how many of each text's 10 nearest
    neighbours in the corpus stay the same."""
    a = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    b = parent / np.linalg.norm(parent, axis=1, keepdims=True)
    cosine = (a * b).sum(axis=1)
    ours = top_k(a, parent_top.shape[1])
    agreement = np.mean([len(set(x) & set(y)) / parent_top.shape[1] for x, y in zip(ours, parent_top, strict=True)])
    return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()), "top10_agreement": float(agreement)}


def quality_drop(kind: str, quality: dict[str, float], parent: dict[str, float]) -> float:
    """How much worse than the parent, on the scale the accuracy budget uses: accuracy points (0.01 = one
    point) for classifiers, relative RMSE for regressors, 1 - mean cosine for embedding models."""
    if kind == "classifier":
        return parent["accuracy"] - quality["accuracy"]
    if kind == "regressor":
        return (quality["rmse"] - parent["rmse"]) / max(parent["rmse"], 1e-12)
    return 1.0 - quality["mean_cosine"]


def recommend(rows: list[dict[str, Any]], budget: float, parent_throughput: float) -> dict[str, Any] | None:
    """The fastest variant (throughput at batch 32) whose quality drop is within the budget, if it is faster
    than the parent at all."""
    eligible = [r for r in rows if r["within_budget"] and r["throughput_batch32"] > parent_throughput]
    return max(eligible, key=lambda r: r["throughput_batch32"]) if eligible else None


def headline(kind: str) -> str:
    return {"classifier": "accuracy", "regressor": "rmse"}.get(kind, "mean_cosine")


def plot_png(report: dict[str, Any], size: tuple[int, int] = (760, 480)) -> bytes:
    """Quality (y) against p50 latency at batch 1 (x), marker area by artifact size, parent in grey."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 80, 30, 40, 60
    rows = [report["parent"], *report["variants"]]
    metric = headline(report["kind"])
    xs = [r["p50_ms_batch1"] for r in rows]
    ys = [r["quality"][metric] for r in rows]
    x_lo, x_hi = 0.0, max(xs) * 1.15 or 1.0
    y_span = (max(ys) - min(ys)) or abs(max(ys)) * 0.02 or 0.01
    y_lo, y_hi = min(ys) - 0.25 * y_span, max(ys) + 0.25 * y_span
    largest = max(r["size_bytes"] for r in rows) or 1

    def at(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)
        py = height - bottom - (y - y_lo) / (y_hi - y_lo) * (height - top - bottom)
        return px, py

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.line([(left, top), (left, height - bottom), (width - right, height - bottom)], fill="black")
    for i in range(5):
        x = x_lo + (x_hi - x_lo) * i / 4
        y = y_lo + (y_hi - y_lo) * i / 4
        px, _ = at(x, y_lo)
        _, py = at(x_lo, y)
        draw.text((px - 12, height - bottom + 6), f"{x:.3g}", fill="black")
        draw.text((6, py - 6), f"{y:.4g}", fill="black")
    draw.text((width // 2 - 90, height - 24), "p50 latency at batch 1 (ms)", fill="black")
    draw.text((6, 10), f"{metric} on held-out data; marker area = artifact size", fill="black")
    for row in rows:
        px, py = at(row["p50_ms_batch1"], row["quality"][metric])
        radius = 4 + 18 * math.sqrt(row["size_bytes"] / largest)
        recommended = report.get("recommendation") and report["recommendation"]["method"] == row.get("method")
        colour = (150, 150, 150) if row is report["parent"] else (40, 160, 60) if recommended else (50, 90, 200)
        draw.ellipse([px - radius, py - radius, px + radius, py + radius], outline=colour, width=3)
        draw.text((px + radius + 3, py - 6), str(row.get("method", "parent")), fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per model (parent first) for the CLI's comparison table."""
    metric = headline(report["kind"])
    out = []
    for row in [report["parent"], *report["variants"]]:
        out.append(
            {
                "variant": row.get("method", "parent"),
                "version": row.get("version"),
                metric: row["quality"][metric],
                "drop": row.get("quality_drop", 0.0),
                "size_mb": row["size_bytes"] / 1e6,
                "p50_ms": row["p50_ms_batch1"],
                "rows_per_s_b32": row["throughput_batch32"],
                "speedup": row.get("speedup", 1.0),
                "in_budget": row.get("within_budget", True),
            }
        )
    return out


__all__ = [
    "Timing",
    "best_timing",
    "classifier_quality",
    "embedding_quality",
    "measure",
    "plot_png",
    "quality_drop",
    "recommend",
    "regressor_quality",
    "table",
    "top_k",
]
