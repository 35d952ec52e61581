"""Data-parallel training (#21): samples/s of a digits CNN trained with ``workers: 2`` against ``workers: 1`` on the
two-node test cluster, and what a checkpoint costs each epoch.

    make bench-scale                # or: .venv/bin/python -m benchmarks.distributed [--epochs 6] [--runs 2] [--write]

Needs root, like benchmarks/scale.py: it re-runs itself inside a network namespace of its own (only ``lo`` up), where
a two-node Ray cluster (one CPU each, token authentication on) starts on 127.0.0.1 with one Stratus server on the
Ray executor. Each run trains the digits CNN (batch 32, Adam, ``--epochs``) as a Ray Train job with one worker,
then with two (0.75 CPU and one torch thread each: one on each node, beside the job's own actor of 0.25 CPU).
Figures, from the job's epoch events: samples/s (median over the epochs after the first, of the job's rows per
second of training, all workers together), the checkpoint's time per epoch (rank 0 packing, sealing and reporting it
to Ray Train; median) and its size, and the whole job's time from submission to success. Every process it started
is killed by its pid. --write records the table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.__main__ import ROOT, machine, start_server
from benchmarks.report import write_section
from benchmarks.scale import ray_cluster
from stratus.samples import ensure_samples

INSIDE = "STRATUS_BENCH_DISTRIBUTED_INSIDE"
_BEGIN, _END = "<!-- bench-distributed:begin -->", "<!-- bench-distributed:end -->"
HEADER = "| workers | nodes used | samples/s | vs 1 worker | checkpoint ms/epoch | checkpoint KiB | job s | accuracy |"


def _train(url: str, auth: dict[str, str], workers: int, epochs: int) -> dict[str, Any]:
    body = {
        "dataset": "bench-digits",
        "model": "cnn",
        "name": f"bench-cnn-{workers}",
        "params": {"epochs": epochs, "seed": 0},
        "workers": workers,
        "cpus_per_worker": 0.75,  # beside the job's own actor (0.25) on a node of one CPU; one torch thread each
    }
    started = time.perf_counter()
    response = httpx.post(f"{url}/api/v1/jobs", json=body, headers=auth, timeout=60)
    response.raise_for_status()
    job_id = response.json()["id"]
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=auth, timeout=30).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    else:
        raise SystemExit(f"the workers={workers} job did not end")
    total = time.perf_counter() - started
    if job["state"] != "succeeded":
        raise SystemExit(f"the workers={workers} job {job['state']}: {job['error']}")
    events = httpx.get(f"{url}/api/v1/jobs/{job_id}/logs", headers=auth, timeout=30).json()["events"]
    epochs_seen = [e["data"] for e in events if e["kind"] == "epoch"]
    checkpoints = [e["data"] for e in events if e["kind"] == "checkpoint"]
    nodes = {e["data"]["node"] for e in events if e["kind"] == "worker"}
    return {
        "samples_per_s": statistics.median(e["samples_per_s"] for e in epochs_seen[1:] or epochs_seen),
        "checkpoint_s": statistics.median(e["checkpoint_s"] for e in epochs_seen),
        "checkpoint_bytes": checkpoints[-1]["bytes"] if checkpoints else 0,
        "total_s": total,
        "accuracy": job["metrics"]["accuracy"],
        "nodes": len(nodes),
    }


def inside(args: argparse.Namespace) -> dict[str, Any]:
    cache = Path.home() / ".cache" / "stratus" / "bench-samples"
    ensure_samples(cache)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with ray_cluster(tmp) as address:
            extra = {
                "STRATUS_EXECUTOR": "ray",
                "STRATUS_RAY_ADDRESS": address,
                "STRATUS_JOB_THREADS": "1",
                "STRATUS_JOB_CPUS": "0.25",
            }
            _, url = start_server(tmp / "ray", cache, 1, env_extra=extra)
            auth = {"Authorization": f"Bearer {(tmp / 'ray' / 'admin.key').read_text().strip()}"}
            dataset = {"name": "bench-digits", "builtin": "digits"}
            httpx.post(f"{url}/api/v1/datasets/builtin", json=dataset, headers=auth, timeout=60).raise_for_status()
            results: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
            for _ in range(args.runs):
                for workers in (1, 2):
                    result = _train(url, auth, workers, args.epochs)
                    results[str(workers)].append(result)
                    print(f"workers={workers}: {json.dumps(result)}", flush=True)
            return results


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> list[str]:
    rows = []
    one = statistics.median(r["samples_per_s"] for r in results["1"])
    for workers in ("1", "2"):
        runs = results[workers]

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return float(statistics.median(r[key] for r in runs))

        rows.append(
            f"| {workers} | {min(r['nodes'] for r in runs)} | {med('samples_per_s'):,.0f} | "
            f"{med('samples_per_s') / one:.2f} | {med('checkpoint_s') * 1000:.0f} | "
            f"{med('checkpoint_bytes') / 1024:.0f} | {med('total_s'):.1f} | {med('accuracy'):.3f} |"
        )
    return rows


def write(rows: list[str], args: argparse.Namespace) -> None:
    lead = (
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `make bench-scale` (`.venv/bin/python -m benchmarks.distributed "
        f"--epochs {args.epochs} --runs {args.runs} --write`) on {machine()}: the digits CNN (batch 32, Adam, "
        f"{args.epochs} epochs) as a Ray Train job on a two-node Ray cluster (one CPU each) in a network namespace of "
        "the benchmark's own, one torch thread a worker; medians of the runs. samples/s: the job's training rows per "
        "second over all workers (epochs after the first); checkpoint: rank 0 packing, sealing and reporting the state "
        "to Ray Train each epoch (the server then keeps it in the artifact store, off the workers' path). "
        f"One-minute load average when it ended: {os.getloadavg()[0]:.1f} (above about 2, other work shared the "
        "machine)."
    )
    block = "\n".join([_BEGIN, lead, "", HEADER, "|---|---|---|---|---|---|---|---|", *rows, _END])
    write_section(_BEGIN, _END, block, heading="## Data-parallel training (`make bench-scale`)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per job")
    parser.add_argument("--runs", type=int, default=2, help="jobs per worker count")
    parser.add_argument("--write", action="store_true", help="record the results in docs/benchmarks.md")
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.environ.get(INSIDE):
        Path(args.out).write_text(json.dumps(inside(args)))
        return
    if os.geteuid() != 0:
        raise SystemExit("make bench-scale needs root: it makes a network namespace of its own (unshare -n)")
    print(f"machine: {machine()}", flush=True)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, "-m", "benchmarks.distributed", "--out", out.name]
        command += ["--epochs", str(args.epochs), "--runs", str(args.runs)]
        subprocess.run(["unshare", "-n", *command], env={**os.environ, INSIDE: "1"}, cwd=ROOT, check=True)
        results = json.loads(Path(out.name).read_text())
    rows = report(results, args)
    header = (
        "| workers | nodes used | samples/s | vs 1 worker | checkpoint ms/epoch | checkpoint KiB | job s | accuracy |"
    )
    print("\n".join([header, *rows]))
    print(f"One-minute load average when it ended: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.")
    if args.write:
        write(rows, args)


if __name__ == "__main__":
    main()
