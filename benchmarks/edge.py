"""The edge runner against the platform's own serving: throughput at concurrency 8 for iris and MiniLM int8,
cold start to the first answer, and resident memory (docs/benchmarks.md, "Edge runner").

    .venv/bin/python -m benchmarks.edge [--seconds 10] [--write]     # make bench runs it too

The runner runs from a virtualenv of its own, installed from edge/ as a user would (``pip install ./edge[text]``
with constraints.txt, packages from the registry or pip's cache), so its figures are those of the small
install: the benchmark lists that venv and fails if torch or a platform-server package is in it. The platform
serves the same version files (a real server, samples imported, MiniLM quantized by a compression job); both
get the same ONNX Runtime threads. Each wrk run is 1 thread, concurrency 8, V2 JSON with the same bodies.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.__main__ import free_port, machine, rss_mb, start_server
from benchmarks.load import LoadResult, ensure_wrk, run_wrk
from benchmarks.report import write_section
from benchmarks.workloads import iris_v2_body, sentences, wrk_script
from stratus.samples import ensure_samples
from stratus.sdk import Client

ROOT = Path(__file__).resolve().parent.parent
VENV = Path.home() / ".cache" / "stratus" / "edge-bench-venv"
FORBIDDEN = {"torch", "sqlalchemy", "alembic", "fastapi", "starlette", "scikit-learn", "scipy", "grpcio", "ray"}
BEGIN, END = "<!-- edge-bench:begin -->", "<!-- edge-bench:end -->"


def runner_venv() -> tuple[Path, list[str]]:
    """The runner's own venv (made again when edge/ or the pins change); its package list."""
    stamp_text = hashlib.sha256(
        (ROOT / "constraints.txt").read_bytes() + (ROOT / "edge" / "pyproject.toml").read_bytes()
    ).hexdigest()
    python = VENV / "bin" / "python"
    stamp = VENV / ".stamp"
    if not stamp.exists() or stamp.read_text() != stamp_text:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), f"{ROOT / 'edge'}[text]"],
            check=True,
        )
        stamp.write_text(stamp_text)
    else:  # the same dependencies: the runner's own code (and the platform modules it ships) as they are now
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(ROOT / "edge")],
            check=True,
        )
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout.split()
    names = {line.split("==")[0].lower().replace("_", "-") for line in listed}
    if names & FORBIDDEN:
        raise SystemExit(f"the runner's venv holds {sorted(names & FORBIDDEN)}")
    return python, listed


def minilm_bodies(texts: list[str]) -> list[str]:
    return [
        json.dumps(
            {
                "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [t]}],
                "outputs": [{"name": "embedding"}],
            },
            separators=(",", ":"),
        )
        for t in texts
    ]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process: a cold start's cost that a busy machine does not inflate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_runner(
    python: Path, bundle: Path, state: Path, threads: int, key: str, probe: str, model: str
) -> tuple[subprocess.Popen[bytes], str, float]:
    """`stratus-edge serve BUNDLE`; returns the process, its URL and the seconds to its first answer."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    process = subprocess.Popen(
        [
            str(python),
            "-m",
            "stratus_edge",
            "--state",
            str(state),
            "serve",
            str(bundle),
            "--port",
            str(port),
            "--threads",
            str(threads),
            "--trust-key",
            key,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with httpx.Client(timeout=5) as client:
        while time.monotonic() - started < 120:
            try:
                if client.post(f"{url}/v2/models/{model}/infer", content=probe).status_code == 200:
                    return process, url, time.monotonic() - started
            except httpx.TransportError:
                time.sleep(0.005)
    process.kill()
    raise SystemExit(f"the runner did not answer for {bundle}")


def int8_minilm(api: Client) -> int:
    """MiniLM's int8 variant: one quantize-dynamic job over its MatMuls and its embedding table (Gather), so the
    whole encoder is int8 (reused when the home has it)."""
    for version in api.list_versions("minilm"):
        if version["params"].get("compression_method") == "quantize-dynamic":
            return int(version["version"])
    params = {"quantize-dynamic": {"op_types": ["MatMul", "Gather"]}}
    api.compress("minilm", 1, methods=["quantize-dynamic"], params=params, accuracy_budget=0.02, wait=True)
    return int8_minilm(api)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--starts", type=int, default=5, help="cold starts per model")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--only", choices=["iris", "minilm"], help="measure one model (not with --write)")
    args = parser.parse_args()
    wrk = ensure_wrk()
    python, packages = runner_venv()
    print(f"machine: {machine()}\nrunner venv: {' '.join(packages)}", flush=True)
    cache = Path.home() / ".cache" / "stratus" / "bench-samples"
    ensure_samples(cache)
    tmp = Path(tempfile.mkdtemp(prefix="stratus-edge-bench-"))
    server, url = start_server(tmp / "home", cache, args.threads)
    results: dict[str, dict[str, object]] = {}
    try:
        admin = (tmp / "home" / "admin.key").read_text().strip()
        api = Client(url, api_key=admin)
        minilm_version = int8_minilm(api)
        key = api.edge_signing_key()["public_key"]
        bundles = {"iris": tmp / "iris", "minilm": tmp / "minilm"}
        api.export_edge("iris:1", bundles["iris"])
        api.export_edge(f"minilm:{minilm_version}", bundles["minilm"])
        texts = sentences()
        work = {
            "iris": ([iris_v2_body()], "/v2/models/iris/infer", "/v2/models/iris/infer"),
            "minilm": (
                minilm_bodies(texts),
                f"/v2/models/minilm/versions/{minilm_version}/infer",
                "/v2/models/minilm/infer",
            ),
        }
        for model, (bodies, cloud_path, edge_path) in work.items():
            if args.only and model != args.only:
                continue
            starts, cpu = [], []
            for i in range(args.starts):
                process, _, seconds = start_runner(
                    python, bundles[model], tmp / f"state-{model}-{i}", args.threads, key, bodies[0], model
                )
                starts.append(seconds)
                cpu.append(cpu_seconds(process.pid))
                process.kill()
                process.wait()
            process, edge_url, _ = start_runner(
                python, bundles[model], tmp / f"state-{model}", args.threads, key, bodies[0], model
            )
            loaded_rss = rss_mb(process.pid)  # loaded, one request answered
            try:
                script_edge = wrk_script(bodies, "none")
                script_cloud = wrk_script(bodies, admin)
                run_wrk(wrk, url + cloud_path, script_cloud, 8, 2)  # warm both
                run_wrk(wrk, edge_url + edge_path, script_edge, 8, 2)
                cloud_runs: list[LoadResult] = []
                edge_runs: list[LoadResult] = []
                for _ in range(3):  # alternated: a neighbour's load hits both alike
                    cloud_runs.append(run_wrk(wrk, url + cloud_path, script_cloud, 8, args.seconds / 3))
                    edge_runs.append(run_wrk(wrk, edge_url + edge_path, script_edge, 8, args.seconds / 3))
                rss = rss_mb(process.pid)
            finally:
                process.kill()
                process.wait()
            cloud_rate = statistics.median(r.requests_per_s for r in cloud_runs)
            edge_rate = statistics.median(r.requests_per_s for r in edge_runs)
            results[model] = {
                "cloud": cloud_rate,
                "edge": edge_rate,
                "ratio": edge_rate / cloud_rate,
                "edge_p99": statistics.median(r.p99_ms for r in edge_runs),
                "cloud_p99": statistics.median(r.p99_ms for r in cloud_runs),
                "errors": sum(r.errors for r in edge_runs + cloud_runs),
                "start_median": statistics.median(starts),
                "start_max": max(starts),
                "start_cpu": statistics.median(cpu),
                "rss": rss,
                "loaded_rss": loaded_rss,
                "model_mb": sum(p.stat().st_size for p in bundles[model].glob("*.onnx")) / 2**20,
            }
            print(model, results[model], flush=True)
    finally:
        server.terminate()
        server.wait()
    lines = [
        BEGIN,
        f"Last run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}; `python -m benchmarks.edge`, "
        f"{args.seconds:.0f} s of wrk per side (3 alternating rounds), concurrency 8, "
        f"{args.threads} ONNX Runtime threads each; load average at the end {os.getloadavg()[0]:.1f} (other work on "
        "the machine: the cold starts and the platform's figures move with it).",
        "",
        "| model | platform req/s | runner req/s | runner/platform | p99 platform / runner (ms) "
        f"| cold start to first answer (median, max of {args.starts}; CPU time) | runner RSS loaded / after the load "
        "| ONNX files | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, r in results.items():
        name = "iris" if model == "iris" else "MiniLM int8"
        lines.append(
            f"| {name} | {r['cloud']:,.0f} | {r['edge']:,.0f} | {r['ratio']:.2f} "
            f"| {r['cloud_p99']:.1f} / {r['edge_p99']:.1f} "
            f"| {r['start_median']:.2f} s, {r['start_max']:.2f} s; {r['start_cpu']:.2f} s CPU "
            f"| {r['loaded_rss']:.0f} / {r['rss']:.0f} MB "
            f"| {r['model_mb']:.1f} MB | {r['errors']} |"
        )
    lines += ["", f"The runner's venv (`pip list`): {', '.join(packages)}.", END]
    print("\n".join(lines))
    if args.write and not args.only:
        write_section(BEGIN, END, "\n".join(lines), heading="## Edge runner")


if __name__ == "__main__":
    main()
