"""What Ray costs (#16): endpoint throughput with replicas as Ray actors against local replica processes, for iris and
MiniLM at concurrency 32, and the start latency of a job on the Ray executor against the local one.

    make bench-scale                # or: .venv/bin/python -m benchmarks.scale [--seconds 10] [--rounds 2] [--write]

Needs root: it re-runs itself inside a network namespace of its own (``unshare -n``, only ``lo`` up), where a
two-node Ray cluster (one CPU each, token authentication on) starts on 127.0.0.1, as in tests/scaleout/. Two
servers run side by side on that loopback, one with the local placement and executor, one with the Ray ones;
each has a two-replica endpoint per model (one ONNX Runtime thread per replica). wrk loads one endpoint at a time,
alternating local and Ray in ``--rounds`` rounds; the table keeps each one's median. Job start latency: an iris
logistic regression is submitted ``--jobs`` times to each server; the figure is from the submission to the job's
first line of output (its child running its own code), and the whole job until it succeeded. Every process it
started is killed by its pid at the end. --write records the results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.__main__ import ROOT, free_port, machine, start_server
from benchmarks.load import LoadResult, ensure_wrk, run_wrk
from benchmarks.report import write_section
from benchmarks.workloads import iris_v2_body, sentences, wrk_script
from stratus.samples import ensure_samples

INSIDE = "STRATUS_BENCH_SCALE_INSIDE"
_BEGIN, _END = "<!-- bench-scale:begin -->", "<!-- bench-scale:end -->"
BIN = Path(sys.executable).parent


def _descendants() -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_all() -> None:
    """Everything this process started, by pid (Ray's daemons were re-parented here: this is their subreaper)."""
    for _ in range(20):
        pids = _descendants()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass


def _start_ray(tmp: Path, env: dict[str, str], temp: str) -> str:
    port = free_port()
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--object-store-memory=200000000", "--disable-usage-stats"]
    head = [str(BIN / "ray"), "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"]
    worker = [str(BIN / "ray"), "start", f"--address=127.0.0.1:{port}"]
    with open(tmp / "ray.log", "ab") as log:
        for command in (head, worker):
            subprocess.run([*command, *common], env=env, stdout=log, stderr=log, check=True)
    return f"127.0.0.1:{port}"


@contextlib.contextmanager
def ray_cluster(tmp: Path) -> Iterator[str]:
    """Inside the benchmark's network namespace: loopback up, a two-node Ray cluster with token auth (its daemons
    re-parented to this process, their subreaper), its address; everything this process started is killed after."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    ctypes.CDLL("libc.so.6").prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: Ray's daemons stay ours
    token = tmp / "ray-token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"})
    ray_temp = f"/tmp/sray-{secrets.token_hex(3)}"  # Ray's socket paths must stay short
    try:
        yield _start_ray(tmp, {**os.environ}, ray_temp)
    finally:
        _kill_all()
        shutil.rmtree(ray_temp, ignore_errors=True)


def _endpoint(url: str, auth: dict[str, str], name: str, model: str) -> None:
    body = {
        "name": name,
        "targets": [{"model": model, "version": "1"}],
        "scaling": {"min_replicas": 2, "max_replicas": 2},
    }
    httpx.post(f"{url}/api/v1/endpoints", json=body, headers=auth, timeout=60).raise_for_status()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = httpx.get(f"{url}/api/v1/endpoints/{name}", headers=auth).json()
        live = state.get("live") or {}
        ready = [r for t in live.get("targets", []) for r in t["replicas"] if r["state"] == "ready"]
        if state["state"] == "ready" and len(ready) == 2:
            return
        time.sleep(0.3)
    raise SystemExit(f"endpoint {name} at {url} did not become ready")


def _job_latency(url: str, auth: dict[str, str]) -> tuple[float, float]:
    """(submission -> the child's first line, submission -> succeeded), in seconds."""
    body = {"dataset": "bench-iris", "model": "logistic_regression", "name": "bench-lr"}
    started = time.perf_counter()
    job = httpx.post(f"{url}/api/v1/jobs", json=body, headers=auth, timeout=60).json()
    first: float | None = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        events = httpx.get(f"{url}/api/v1/jobs/{job['id']}/logs", headers=auth, timeout=30).json()["events"]
        if first is None and any(e["kind"] == "log" for e in events):
            first = time.perf_counter() - started
        state = httpx.get(f"{url}/api/v1/jobs/{job['id']}", headers=auth, timeout=30).json()["state"]
        if state in ("succeeded", "failed", "cancelled"):
            if state != "succeeded":
                raise SystemExit(f"the benchmark job {state} on {url}")
            return first if first is not None else time.perf_counter() - started, time.perf_counter() - started
        time.sleep(0.02)
    raise SystemExit("the benchmark job did not end")


def inside(args: argparse.Namespace) -> dict[str, object]:
    """The measurement, run inside the namespace."""
    wrk = args.wrk
    cache = Path.home() / ".cache" / "stratus" / "bench-samples"  # shared with make bench
    ensure_samples(cache)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with ray_cluster(tmp) as address:
            ray_env = {"STRATUS_EXECUTOR": "ray", "STRATUS_PLACEMENT": "ray", "STRATUS_RAY_ADDRESS": address}
            servers = {
                "local": start_server(tmp / "local", cache, 1, env_extra={"STRATUS_JOB_THREADS": "1"}),
                "ray": start_server(
                    tmp / "ray",
                    cache,
                    1,
                    env_extra={
                        **ray_env,
                        "STRATUS_JOB_THREADS": "1",
                        "STRATUS_JOB_CPUS": "0.25",
                        "STRATUS_REPLICA_CPUS": "0.25",
                    },
                ),
            }
            auths = {
                name: {"Authorization": f"Bearer {(tmp / name / 'admin.key').read_text().strip()}"} for name in servers
            }
            for name, (_, url) in servers.items():
                for model in ("iris", "minilm"):
                    _endpoint(url, auths[name], f"ep-{model}", model)
            results: dict[str, dict[str, list[LoadResult]]] = {"iris": {}, "minilm": {}}
            texts = sentences()
            for _ in range(args.rounds):
                for model in ("iris", "minilm"):
                    for name, (_, url) in servers.items():
                        key = auths[name]["Authorization"].split()[1]
                        if model == "iris":
                            path, bodies = f"{url}/v2/models/ep-iris/infer", [iris_v2_body()]
                        else:
                            path = f"{url}/openai/v1/embeddings"
                            bodies = [json.dumps({"model": "ep-minilm", "input": t}) for t in texts]
                        result = run_wrk(wrk, path, wrk_script(bodies, key), 32, args.seconds)
                        results[model].setdefault(name, []).append(result)
                        print(f"{model} {name}: {result.requests_per_s:,.0f} req/s, {result.errors} errors", flush=True)
            for name, (_, url) in servers.items():
                dataset = {"name": "bench-iris", "builtin": "iris"}
                httpx.post(f"{url}/api/v1/datasets/builtin", json=dataset, headers=auths[name], timeout=60)
            jobs: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
            for _ in range(args.jobs):
                for name, (_, url) in servers.items():
                    jobs[name].append(_job_latency(url, auths[name]))
            return {"load": _summarise(results), "jobs": jobs}


def _summarise(results: dict[str, dict[str, list[LoadResult]]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for model, by_name in results.items():
        out[model] = {}
        for name, runs in by_name.items():
            out[model][name] = {
                "rps": statistics.median(r.requests_per_s for r in runs),
                "p50": statistics.median(r.p50_ms for r in runs),
                "p99": statistics.median(r.p99_ms for r in runs),
                "errors": float(sum(r.errors for r in runs)),
            }
    return out


def report(data: dict[str, object], args: argparse.Namespace) -> tuple[list[str], str]:
    load: dict[str, dict[str, dict[str, float]]] = data["load"]  # type: ignore[assignment]
    rows = []
    for model in ("iris", "minilm"):
        local = load[model]["local"]["rps"]
        for name, label in (("local", "local processes"), ("ray", "Ray actors")):
            r = load[model][name]
            rows.append(
                f"| {model} | {label} | 32 | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                f"{r['rps'] / local:.2f} | {r['errors']:.0f} |"
            )
    jobs: dict[str, list[list[float]]] = data["jobs"]  # type: ignore[assignment]
    first = {name: statistics.median(j[0] for j in runs) for name, runs in jobs.items()}
    total = {name: statistics.median(j[1] for j in runs) for name, runs in jobs.items()}
    summary = (
        f"Job start latency (iris logistic regression, median of {args.jobs}; submission -> the child's first line): "
        f"local executor {first['local']:.2f} s, Ray executor {first['ray']:.2f} s; the whole job until it succeeded: "
        f"local {total['local']:.2f} s, Ray {total['ray']:.2f} s."
    )
    return rows, summary


def write(rows: list[str], summary: str, args: argparse.Namespace) -> None:
    block = "\n".join(
        [
            _BEGIN,
            f"Measured {datetime.now(UTC):%Y-%m-%d} with `make bench-scale` (`.venv/bin/python -m benchmarks.scale "
            f"--seconds {args.seconds:.0f} --rounds {args.rounds} --jobs {args.jobs} --write`) on {machine()}. A "
            "two-node Ray cluster (one CPU each, token auth) and two servers on the loopback of a network namespace "
            "of the benchmark's own; each endpoint has 2 replicas with one ONNX Runtime thread each; wrk at "
            "concurrency 32 (iris: one-row V2 JSON; MiniLM: one sentence per OpenAI embeddings request), median of "
            "the rounds, local and Ray alternating.",
            "",
            "| model | replicas as | concurrency | req/s | p50 ms | p99 ms | vs local | errors |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            summary,
            _END,
        ]
    )
    write_section(_BEGIN, _END, block, heading="## Ray placement and executor (`make bench-scale`)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk duration per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of local/Ray alternation per model")
    parser.add_argument("--jobs", type=int, default=3, help="jobs per executor for the start latency")
    parser.add_argument("--write", action="store_true", help="record the results in docs/benchmarks.md")
    parser.add_argument("--wrk", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.environ.get(INSIDE):
        Path(args.out).write_text(json.dumps(inside(args)))
        return
    if os.geteuid() != 0:
        raise SystemExit("make bench-scale needs root: it makes a network namespace of its own (unshare -n)")
    wrk = ensure_wrk()  # installed, if need be, before the namespace cuts the network off
    print(f"machine: {machine()}", flush=True)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, "-m", "benchmarks.scale", "--wrk", wrk, "--out", out.name]
        command += ["--seconds", str(args.seconds), "--rounds", str(args.rounds), "--jobs", str(args.jobs)]
        subprocess.run(["unshare", "-n", *command], env={**os.environ, INSIDE: "1"}, cwd=ROOT, check=True)
        data = json.loads(Path(out.name).read_text())
    rows, summary = report(data, args)
    load_average = os.getloadavg()[0]
    summary += (
        f" One-minute load average when it ended: {load_average:.1f} on {os.cpu_count()} cores (other work shared the "
        "machine when above about 2: compare the rows of one run, and run it again on a quiet machine)."
    )
    print("\n".join(["| model | replicas as | concurrency | req/s | p50 ms | p99 ms | vs local | errors |", *rows]))
    print(summary)
    if args.write:
        write(rows, summary, args)


if __name__ == "__main__":
    main()
