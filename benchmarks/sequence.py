"""Sequence trainers on the module-family docstring task: ``python -m benchmarks.sequence [--write]``
(``make bench-sequence``).

The task is ``stratus.compress.corpus.module_family_task()``: the standard library's docstrings labelled by the
top-level package they come from (six families; the rows benchmarks/finetune.py measures fine_tune on). A real
server (``stratus serve`` in a temporary home) takes the task as an uploaded CSV, trains ``text_classifier``
(the bag-of-embeddings baseline), ``rnn`` and ``transformer`` as jobs (25% held out, stratified, seed 0), and
serves each version: the held-out texts go through V2 (BYTES) and V1 and their labels are compared with the
job's own evaluation, row for row. --write records the table in docs/training.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.__main__ import start_server
from stratus import Client
from stratus.compress.corpus import FAMILIES, module_family_task

BEGIN, END = "<!-- sequence:start -->", "<!-- sequence:end -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "training.md"
#: The configurations measured: the baseline at its defaults and as benchmarks/finetune.py tunes it, then the
#: sequence trainers as the docs recommend them for a few thousand texts.
RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("text_classifier (defaults)", "text_classifier", {}),
    ("text_classifier (epochs 40, lr 0.01)", "text_classifier", {"epochs": 40, "lr": 0.01}),
    (
        "rnn (bidirectional LSTM)",
        "rnn",
        {"bidirectional": True, "epochs": 10, "lr": 0.01, "token_dropout": 0.2, "dropout": 0.3},
    ),
    (
        "transformer (1 layer, 2 heads)",
        "transformer",
        {"num_layers": 1, "heads": 2, "epochs": 25, "lr": 0.002, "token_dropout": 0.25, "dropout": 0.2},
    ),
]
BATCH = 64


def served_labels(url: str, key: str, model: str, version: int, texts: list[str]) -> tuple[list[int], list[int]]:
    """The version's labels for ``texts`` through V2 (a BYTES tensor) and through V1 (instances), in batches."""
    v2: list[int] = []
    v1: list[int] = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(headers=headers, timeout=120) as http:
        for start in range(0, len(texts), BATCH):
            chunk = texts[start : start + BATCH]
            body = {"inputs": [{"name": "text", "shape": [len(chunk)], "datatype": "BYTES", "data": chunk}]}
            r = http.post(f"{url}/v2/models/{model}/versions/{version}/infer", json=body)
            r.raise_for_status()
            v2 += next(o for o in r.json()["outputs"] if o["name"] == "label")["data"]
            r = http.post(f"{url}/v1/models/{model}/versions/{version}:predict", json={"instances": chunk})
            r.raise_for_status()
            v1 += [p["label"] for p in r.json()["predictions"]]
    return v2, v1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="record the results in docs/training.md")
    args = parser.parse_args()
    task = module_family_task()
    counts = {f: task.labels.count(task.classes.index(f)) for f in FAMILIES}
    print(f"{len(task.texts)} docstrings: {counts}", flush=True)
    _, _, test_texts, _ = task.split(0.25, 0)
    home = Path(tempfile.mkdtemp()) / "home"
    env = {"STRATUS_JOB_THREADS": str(args.threads)}
    process, url = start_server(home, home.parent / "cache", args.threads, "--no-samples", env_extra=env)
    rows = []
    try:
        key = (home / "admin.key").read_text().strip()
        with Client(url, api_key=key) as client:
            client.upload_dataset("docstrings", task.csv(), target="family")
            for label, trainer, params in RUNS:
                started = time.monotonic()
                job = client.train("docstrings", trainer, name=trainer.replace("_", "-"), params=params)
                seconds = time.monotonic() - started
                assert job.model is not None and job.version is not None
                evaluation = client.request(
                    "GET", f"/api/v1/models/{job.model}/versions/{job.version}/files/evaluation.json"
                ).json()["test_predictions"]
                v2, v1 = served_labels(url, key, job.model, job.version, test_texts)
                same = sum(a == b == c for a, b, c in zip(evaluation, v2, v1, strict=True))
                rows.append(
                    {
                        "trainer": label,
                        "accuracy": float(job.metrics["accuracy"]),
                        "seconds": seconds,
                        "same": f"{same} / {len(evaluation)}",
                    }
                )
                print(rows[-1], flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    if not args.write:
        return
    from benchmarks.report import write_section

    lines = [
        BEGIN,
        f"Measured by `make bench-sequence` ({time.strftime('%Y-%m-%d')}, jobs on {args.threads} threads, on a "
        f"machine shared with other work): the module-family docstring task, {len(task.texts)} standard-library "
        f"docstrings of six families ({', '.join(f'{f} {n}' for f, n in counts.items())}), 25% held out "
        "(stratified, seed 0). Each trainer ran as a job on a real server; the held-out texts were then sent "
        "to the registered version over V2 (BYTES) and V1, and both answered the job's evaluation label for "
        "every text (last column).",
        "",
        "| trainer | parameters | held-out accuracy | job seconds | served = evaluation (V2 and V1) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (_, _, params), row in zip(RUNS, rows, strict=True):
        shown = ", ".join(f"{k} {v}" for k, v in params.items()) or "defaults"
        lines.append(f"| {row['trainer']} | {shown} | {row['accuracy']:.4f} | {row['seconds']:.0f} | {row['same']} |")
    lines.append(END)
    write_section(BEGIN, END, "\n".join(lines), heading="### Measured: the module-family docstring task", doc=DOC)


if __name__ == "__main__":
    main()
