"""Explanation benchmark: ``python -m benchmarks.explain [--seconds 10] [--write]`` (run by ``make bench``).

1. The latency of explaining one breast-cancer row (a logistic regression registered with its training rows as
   reference; the kernel method, 50 background rows) through ``POST /v1/models/NAME:explain``, the worker
   already started: median and p90 of 30 requests. Target: under 1 s at the median.
2. Iris inference (V2 JSON, one row a request) at concurrency 8 from this process's threads, alone and while
   20 explain requests are kept in flight by another process (each sender posts again when answered), alternated
   twice, each phase ``--seconds`` long. Target: throughput and median latency within 10% of alone.

--write records the figures in docs/benchmarks.md between its markers.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.__main__ import machine, start_server
from benchmarks.report import write_section
from stratus.samples import ensure_samples
from stratus.settings import Settings

BEGIN, END = "<!-- bench-explain:begin -->", "<!-- bench-explain:end -->"
IRIS = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


def register_cancer(client: httpx.Client) -> list[list[float]]:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    train, test, y_train, _ = train_test_split(data.data, data.target, test_size=0.25, random_state=0)
    model = LogisticRegression(max_iter=5000).fit(train, y_train)
    onnx = to_onnx(model, train[:1].astype(np.float32), options={id(model): {"zipmap": False}}, target_opset=17)
    r = client.post("/api/v1/models/cancer/versions", files={"file": ("m.onnx", onnx.SerializeToString())})
    r.raise_for_status()
    csv = ",".join(f'"{n}"' for n in data.feature_names) + "\n"
    csv += "\n".join(",".join(map(str, row)) for row in train) + "\n"
    client.put("/api/v1/models/cancer/versions/1/reference", files={"file": ("t.csv", csv.encode())}).raise_for_status()
    return [row.tolist() for row in test[:30]]


def explain_latency(client: httpx.Client, rows: list[list[float]]) -> list[float]:
    seconds = []
    for row in rows:
        started = time.perf_counter()
        client.post("/v1/models/cancer:explain", json={"instances": [row]}, timeout=120).raise_for_status()
        seconds.append(time.perf_counter() - started)
    return seconds


def iris_load(url: str, headers: dict[str, str], seconds: float, concurrency: int = 8) -> tuple[float, float]:
    """Requests per second and median latency (ms) of V2 iris inference from ``concurrency`` threads."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    stop = time.monotonic() + seconds

    def sender(mine: list[float]) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            while time.monotonic() < stop:
                started = time.perf_counter()
                http.post("/v2/models/iris/infer", json=IRIS).raise_for_status()
                mine.append(time.perf_counter() - started)

    threads = [threading.Thread(target=sender, args=(mine,)) for mine in latencies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [s for mine in latencies for s in mine]
    return len(every) / seconds, statistics.median(every) * 1000


def _send_explains(url: str, headers: dict[str, str], row: list[float], count: int, done: Any, counts: Any) -> None:
    """In a child process: ``count`` senders keeping an explain request in flight each, until ``done``."""

    def sender() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=300) as http:
            while not done.is_set():
                r = http.post("/v1/models/cancer:explain", json={"instances": [row]})
                with counts.get_lock():
                    counts[0 if r.status_code == 200 else 1] += 1

    threads = [threading.Thread(target=sender) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class Explainers:
    """20 explain senders in a process of their own (in this one, their threads would take the GIL from the
    iris load's threads and slow the load generator rather than the server)."""

    def __init__(self, url: str, headers: dict[str, str], row: list[float], count: int = 20) -> None:
        context = multiprocessing.get_context("spawn")
        self.done = context.Event()
        self.counts = context.Array("i", 2)
        self.process = context.Process(
            target=_send_explains, args=(url, headers, row, count, self.done, self.counts), daemon=True
        )
        self.process.start()

    @property
    def answered(self) -> int:
        return int(self.counts[0])

    @property
    def refused(self) -> int:
        return int(self.counts[1])

    def stop(self) -> None:
        self.done.set()
        self.process.join(300)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each iris load phase")
    parser.add_argument("--write", action="store_true", help="record the results in docs/benchmarks.md")
    args = parser.parse_args()
    cache = Settings().resolved_sample_cache_dir
    ensure_samples(cache)
    home = Path(tempfile.mkdtemp(prefix="stratus-bench-explain-")) / "home"
    process, url = start_server(home, cache, 1)
    try:
        headers = {"Authorization": "Bearer " + (home / "admin.key").read_text().strip()}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            rows = register_cancer(client)
            explain_latency(client, rows[:2])  # starts the worker
            latency = explain_latency(client, rows)
        median, p90 = statistics.median(latency), float(np.percentile(latency, 90))
        iris_load(url, headers, 2)  # warm
        alone, beside = [], []
        explained = refused = 0
        for _ in range(2):
            alone.append(iris_load(url, headers, args.seconds))
            load = Explainers(url, headers, rows[0])
            time.sleep(3)  # the child started and its 20 requests queued
            beside.append(iris_load(url, headers, args.seconds))
            load.stop()
            explained, refused = explained + load.answered, refused + load.refused
    finally:
        process.terminate()
        process.wait(60)
        shutil.rmtree(home.parent, ignore_errors=True)
    rps_alone, rps_beside = statistics.mean(r for r, _ in alone), statistics.mean(r for r, _ in beside)
    ms_alone, ms_beside = statistics.mean(m for _, m in alone), statistics.mean(m for _, m in beside)
    lines = [
        "| measure | result | target |",
        "| --- | --- | --- |",
        f"| explain one breast-cancer row (kernel, 50 background rows), 30 requests | median {median * 1000:.0f} ms, "
        f"p90 {p90 * 1000:.0f} ms | median < 1 s |",
        f"| iris V2 at concurrency 8, alone | {rps_alone:.0f} req/s, median {ms_alone:.1f} ms | |",
        f"| the same beside 20 explain requests in flight ({explained} answered, {refused} refused) | "
        f"{rps_beside:.0f} req/s ({(rps_beside / rps_alone - 1) * 100:+.1f}%), median {ms_beside:.1f} ms "
        f"({(ms_beside / ms_alone - 1) * 100:+.1f}%) | within 10% |",
    ]
    for line in lines:
        print(line)
    if args.write:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        block = "\n".join(
            [
                BEGIN,
                "## Explanations",
                "",
                f"Measured by `.venv/bin/python -m benchmarks.explain --seconds {args.seconds:g} --write` (also run by "
                f"`make bench`) on {stamp}, load average {os.getloadavg()[0]:.1f} at the end (other work shared the",
                f"2 cores). Machine: {machine()}. One explanation worker (`STRATUS_EXPLAIN_WORKERS=1`, SCHED_IDLE, ",
                f"one thread, `STRATUS_EXPLAIN_CPU_SHARE={Settings().explain_cpu_share:g}`); iris load from 8 "
                "threads of the benchmark's own process; each phase "
                f"{args.seconds:g} s, alone and beside explanations alternated twice (means shown).",
                "",
                *lines,
                END,
            ]
        )
        write_section(BEGIN, END, block)


if __name__ == "__main__":
    main()
