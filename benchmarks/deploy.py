"""What an endpoint costs: the same iris request through a model name (in-process) and through an
endpoint (router -> replica process over V2 binary), in one run, with wrk on loopback.

    make bench-deploy               # or: .venv/bin/python -m benchmarks.deploy [--seconds 10] [--write]

Also measures the cold start from zero (a request to an endpoint scaled to zero) and the Python start
of a replica without the spare process, for scale. --write records the table in docs/deployments.md.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.__main__ import ROOT, machine, start_server
from benchmarks.load import LoadResult, ensure_wrk, run_wrk
from benchmarks.workloads import iris_v2_body, wrk_script
from stratus.samples import ensure_samples

CONCURRENCY = (1, 8, 32)
_BEGIN, _END = "<!-- bench-deploy:begin -->", "<!-- bench-deploy:end -->"


def _endpoint(url: str, auth: dict[str, str], name: str, replicas: int, min_replicas: int | None = None) -> None:
    scaling = {"min_replicas": replicas if min_replicas is None else min_replicas, "max_replicas": replicas}
    if min_replicas == 0:
        scaling["cooldown_seconds"] = 1
    body = {"name": name, "targets": [{"model": "iris", "version": "1"}], "scaling": scaling}
    httpx.post(f"{url}/api/v1/endpoints", json=body, headers=auth, timeout=60).raise_for_status()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = httpx.get(f"{url}/api/v1/endpoints/{name}", headers=auth).json()
        if state["revision"] == 1 and state["state"] == "ready":
            return
        time.sleep(0.2)
    raise SystemExit(f"endpoint {name} did not become ready")


def _cold_starts(url: str, auth: dict[str, str], rounds: int) -> list[float]:
    """Request an endpoint scaled to zero, wait for it to scale to zero again, repeat."""
    _endpoint(url, auth, "cold", 1, min_replicas=0)
    body = iris_v2_body()
    seconds = []
    for _ in range(rounds):
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/api/v1/endpoints/cold", headers=auth).json()["live"]["targets"][0]["replicas"]:
            if time.monotonic() > deadline:
                raise SystemExit("the endpoint did not scale to zero")
            time.sleep(0.1)
        started = time.perf_counter()
        response = httpx.post(f"{url}/v2/models/cold/infer", content=body, headers=auth, timeout=60)
        response.raise_for_status()
        seconds.append(time.perf_counter() - started)
    return seconds


def _replica_python_start(threads: int) -> float:
    """Seconds for a fresh replica process to import everything (what the spare process saves)."""
    import subprocess

    started = time.perf_counter()
    code = "import stratus.cli.endpoint_server"
    subprocess.run([sys.executable, "-c", code], check=True, env={"OMP_NUM_THREADS": str(threads)}, timeout=120)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk duration per measurement")
    parser.add_argument("--write", action="store_true", help="record the results in docs/deployments.md")
    args = parser.parse_args()
    wrk = ensure_wrk()
    cache = Path.home() / ".cache" / "stratus" / "bench-samples"  # shared with make bench
    ensure_samples(cache)
    print(f"machine: {machine()}", flush=True)
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        # The in-process model gets the same one ONNX Runtime thread as each replica.
        process, url = start_server(Path(tmp) / "home", cache, 1)
        try:
            key = (Path(tmp) / "home" / "admin.key").read_text().strip()
            auth = {"Authorization": f"Bearer {key}"}
            httpx.post(f"{url}/v2/repository/models/iris/load", timeout=60, headers=auth).raise_for_status()
            _endpoint(url, auth, "one", 1)
            _endpoint(url, auth, "two", 2)
            script = wrk_script([iris_v2_body()], key)
            for concurrency in CONCURRENCY:
                results: dict[str, LoadResult] = {}
                for name in ("iris", "one", "two"):
                    results[name] = run_wrk(wrk, f"{url}/v2/models/{name}/infer", script, concurrency, args.seconds)
                base = results["iris"].requests_per_s
                for name, label in (
                    ("iris", "model (in-process)"),
                    ("one", "endpoint, 1 replica"),
                    ("two", "endpoint, 2 replicas"),
                ):
                    r = results[name]
                    row = (
                        f"| {label} | {concurrency} | {r.requests_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                        f"{r.requests_per_s / base:.0%} | {r.errors} |"
                    )
                    rows.append(row)
                    print(row, flush=True)
            colds = _cold_starts(url, auth, rounds=3)
        finally:
            process.terminate()
            process.wait(30)
    python_start = _replica_python_start(1)
    summary = (
        f"Cold start of iris from zero (request sent -> response, 3 rounds): median {statistics.median(colds):.3f} s, "
        f"max {max(colds):.3f} s. A replica process's Python start without the spare: {python_start:.2f} s."
    )
    print(summary)
    if args.write:
        _write(rows, summary, args)


def _write(rows: list[str], summary: str, args: argparse.Namespace) -> None:
    path = ROOT / "docs" / "deployments.md"
    text = path.read_text()
    block = "\n".join(
        [
            _BEGIN,
            f"Measured {datetime.now(UTC):%Y-%m-%d} with `.venv/bin/python -m benchmarks.deploy --seconds "
            f"{args.seconds:.0f} --write` on {machine()}. One-row iris requests (V2 JSON, API key on), wrk on "
            "loopback; every replica and the in-process model use one ONNX Runtime thread.",
            "",
            "| path | concurrency | req/s | p50 ms | p99 ms | vs model | errors |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            summary,
            _END,
        ]
    )
    if _BEGIN in text:
        text = re.sub(re.escape(_BEGIN) + ".*?" + re.escape(_END), block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## What an endpoint costs (benchmark)\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
