"""Federated benchmark: ``python -m benchmarks.federated [--rounds 20] [--write]`` (``make bench-federated``).

Three clients each hold a non-IID shard of scikit-learn's digits (90% of a client's rows from its 3-4 main classes,
10% from the others). A federated CNN job (FedAvg, SecAgg+ on) runs through a real Stratus server: created with the
SDK, joined by three client processes with federated keys bound to it, each training next to its own shard. Central
training trains the same CNN (same trainer, preprocessing and hyperparameters) on the union of the clients' training
parts. Both are scored on the same rows: the union of the clients' held-out parts (each client's own split, as
central training would split that file). Target: the federation within 3 points of central training in at most 20
rounds. --write records the figures in docs/federated.md between its markers.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.__main__ import machine, start_server
from benchmarks.report import write_section

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "federated.md"
BEGIN, END = "<!-- federated-benchmark:begin -->", "<!-- federated-benchmark:end -->"
MAIN_CLASSES = ([0, 1, 2, 3], [4, 5, 6], [7, 8, 9])
MAJOR = 0.9
CLASSES = [str(i) for i in range(10)]
PARAMS = {"lr": 0.002, "batch_size": 32, "seed": 0}


def shards(seed: int = 0) -> list[bytes]:
    """Each client's NPZ: its main classes' rows and, for 10% of its rows, other classes' rows (disjoint)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X.reshape(-1, 1, 8, 8).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(y))
    taken = np.zeros(len(y), dtype=bool)
    files = []
    for main_classes in MAIN_CLASSES:
        main = [i for i in order if y[i] in main_classes and not taken[i]]
        taken[main] = True
        extra = [i for i in order if y[i] not in main_classes and not taken[i]][: int(len(main) * (1 - MAJOR) / MAJOR)]
        taken[extra] = True
        rows = np.array(main + extra)
        buffer = io.BytesIO()
        np.savez(buffer, X=X[rows], y=y[rows])
        files.append(buffer.getvalue())
    return files


def central(files: list[bytes], epochs: int) -> dict[str, Any]:
    """The same CNN trained centrally on the union of the clients' training parts, scored on their held-out parts."""
    import torch

    from stratus.federated import client as fc
    from stratus.federated import model as fed
    from stratus.training.params import TrainParams
    from stratus.training.torch_trainers import evaluate_score, train_torch

    torch.set_num_threads(1)
    params = TrainParams(**PARAMS, epochs=epochs, validation_split=0.0)
    shape = fed.Shape(0, (1, 8, 8), CLASSES)
    parts = [fc.local_data(fc.prepare(f, "local.npz").parsed, shape, params.test_split, params.seed) for f in files]
    X_train = np.concatenate([p.X_train for p in parts])
    y_train = np.concatenate([p.y_train for p in parts])
    X_test = np.concatenate([p.X_test for p in parts])
    y_test = np.concatenate([p.y_test for p in parts])
    started = time.monotonic()
    model = train_torch(
        "cnn",
        X_train,
        y_train,
        None,
        None,
        task="classification",
        classes=10,
        image_shape=(1, 8, 8),
        params=params,
        report=lambda _e: None,
    )
    return {
        "accuracy": evaluate_score(model, X_test, y_test, True),
        "seconds": time.monotonic() - started,
        "train_rows": len(X_train),
        "test_rows": len(X_test),
        "class_share": [float(np.mean(np.isin(p.y_train, m))) for p, m in zip(parts, MAIN_CLASSES, strict=True)],
    }


def _join(url: str, key: str, job: str, name: str, data: bytes) -> None:
    from stratus import Client

    with Client(url, api_key=key) as client:
        client.federated_join(job, data, client=name, wait_s=300)


def federated(files: list[bytes], rounds: int, local_epochs: int, cache: Path) -> dict[str, Any]:
    from stratus import Client

    home = Path(tempfile.mkdtemp(prefix="stratus-fed-bench-"))
    server, url = start_server(home, cache, 1, env_extra={"STRATUS_SAMPLES": "false", "STRATUS_JOB_THREADS": "1"})
    try:
        admin = (home / "admin.key").read_text().strip()
        with Client(url, api_key=admin) as client:
            job = client.federated_create(
                "cnn",
                classes=CLASSES,
                image_shape=[1, 8, 8],
                rounds=rounds,
                min_clients=3,
                strategy="fedavg",
                secure_aggregation=True,
                local_epochs=local_epochs,
                params=PARAMS,
                name="digits-federated",
            )
            keys = [client.federated_key(job["id"])["key"] for _ in files]
            started = time.monotonic()
            context = multiprocessing.get_context("spawn")
            clients = [
                context.Process(target=_join, args=(url, key, job["id"], f"client-{i}", data))
                for i, (key, data) in enumerate(zip(keys, files, strict=True))
            ]
            for process in clients:
                process.start()
            finished = client.get_job(job["id"]).wait(timeout_s=3600)
            seconds = time.monotonic() - started
            for process in clients:
                process.join(60)
            events = client.request("GET", f"/api/v1/jobs/{job['id']}/logs").json()["events"]
            rounds_seen = [e["data"] for e in events if e["kind"] == "epoch"]
            version = client.get_version("digits-federated", finished.version or 1)
        return {
            "accuracy": finished.metrics["accuracy"],
            "clients": finished.metrics["client_accuracy"],
            "rounds": rounds_seen,
            "seconds": seconds,
            "lineage": version["lineage"]["federation"],
        }
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    from stratus.samples.cache import default_cache_dir

    files = shards()
    centrally = central(files, epochs=args.rounds * args.local_epochs)
    print(
        f"central: {centrally['accuracy']:.4f} on {centrally['test_rows']} held-out rows ({centrally['seconds']:.1f} s)"
    )
    fed = federated(files, args.rounds, args.local_epochs, default_cache_dir())
    gap = (centrally["accuracy"] - fed["accuracy"]) * 100
    print(
        f"federated: {fed['accuracy']:.4f} after {len(fed['rounds'])} rounds ({fed['seconds']:.1f} s); "
        f"gap {gap:.2f} points"
    )
    curve = ", ".join(
        f"{r['round']}: {r['val_metric']:.3f}" for r in fed["rounds"] if r["round"] in (1, 2, 5, 10, 15, 20)
    )
    block = "\n".join(
        [
            BEGIN,
            f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}; `make bench-federated` (benchmarks/federated.py).",
            "",
            "| run | held-out accuracy | rounds x local epochs | wall time |",
            "| --- | --- | --- | --- |",
            f"| central training (union of the clients' training parts) | {centrally['accuracy']:.4f} | "
            f"{args.rounds * args.local_epochs} epochs | {centrally['seconds']:.1f} s |",
            f"| federated, FedAvg + SecAgg+, 3 clients | {fed['accuracy']:.4f} | {len(fed['rounds'])} x "
            f"{args.local_epochs} | {fed['seconds']:.1f} s (server, 3 client processes, 2 cores) |",
            "",
            f"Gap: **{gap:.2f} points** (target: within 3). Both scored on the same {centrally['test_rows']} rows, the "
            f"union of the clients' held-out parts; {centrally['train_rows']} training rows. Share of each client's "
            f"training rows in its main classes: {', '.join(f'{s:.0%}' for s in centrally['class_share'])}. "
            f"Each client's held-out accuracy at the end: "
            f"{', '.join(f'{k} {v:.3f}' for k, v in sorted(fed['clients'].items()))}. "
            f"Federated accuracy by round: {curve}. The version's lineage: `{fed['lineage']}`.",
            END,
        ]
    )
    print(block)
    if args.write:
        write_section(BEGIN, END, block, doc=DOC)


if __name__ == "__main__":
    main()
