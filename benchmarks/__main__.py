"""Benchmark the served data plane against the in-process ceiling, in one run.

    make bench                      # or: .venv/bin/python -m benchmarks [--seconds 10] [--write]

Starts a real server on free loopback ports, loads it with wrk (HTTP) and h2load (gRPC) at concurrency
1, 8, 32 and 64 with one-item requests, measures plain ONNX Runtime in-process on the same model files and
threads, and prints served/ceiling ratios. --write records the table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import onnxruntime

from benchmarks.ceiling import iris_ceiling, minilm_ceiling, sequence_lengths
from benchmarks.grpc_load import alternating, ensure_h2load, response_frame_size, run_h2load, target_lines
from benchmarks.load import LoadResult, ensure_wrk, run_wrk
from benchmarks.logging_cost import measure_logging
from benchmarks.workloads import (
    iris_grpc_request,
    iris_v2_body,
    minilm_grpc_request,
    minilm_openai_bodies,
    sentences,
    wrk_script,
)
from stratus.samples import ensure_samples

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 8, 32, 64)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    home: Path, cache: Path, threads: int, *extra: str, env_extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "STRATUS_SAMPLE_CACHE_DIR": str(cache),
        "STRATUS_INTRA_OP_THREADS": str(threads),
        # No gRPC unless asked for (--grpc-port): the servers run side by side and would want one port.
        "STRATUS_GRPC_PORT": "0",
        **(env_extra or {}),
    }
    args = [
        sys.executable,
        "-m",
        "stratus",
        "serve",
        "--port",
        str(port),
        "--home",
        str(home),
        "--log-level",
        "warning",
        *extra,
    ]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not become ready")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory_gib} GiB; "
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"
    )


def table(name: str, results: list[LoadResult], ceilings: list[float]) -> list[str]:
    rows = [
        f"| {name} | {r.concurrency} | {r.requests_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
        f"{ceiling:,.0f} | {r.requests_per_s / ceiling:.1%} | {r.errors} |"
        for r, ceiling in zip(results, ceilings, strict=True)
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk duration per concurrency level")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the gRPC targets' measurement")
    parser.add_argument("--write", action="store_true", help="record the results in docs/benchmarks.md")
    args = parser.parse_args()

    wrk, h2load = ensure_wrk(), ensure_h2load()
    cache = Path.home() / ".cache" / "stratus" / "bench-samples"
    manifest = ensure_samples(cache)
    by_name = {m.name: m for m in manifest.models}
    texts = sentences()
    lengths = sequence_lengths(by_name["minilm"].files["tokenizer.json"], texts)

    print(f"machine: {machine()}", flush=True)
    print("ceiling: plain ONNX Runtime in-process ...", flush=True)
    iris_rates = iris_ceiling(by_name["iris"].path, args.threads, min(args.seconds, 3))
    encoder, tokenizer = by_name["minilm"].files["encoder.onnx"], by_name["minilm"].files["tokenizer.json"]
    minilm_rates = minilm_ceiling(encoder, tokenizer, texts, args.threads, min(args.seconds, 5))

    def ceiling_now(inputs: list[str] = texts) -> float:
        """minilm's ceiling right now: the best of batch 8 and 16, one run with all threads or two at once."""
        return max(
            *minilm_ceiling(encoder, tokenizer, inputs, args.threads, 1.5, (8, 16)).values(),
            *minilm_ceiling(encoder, tokenizer, inputs, args.threads, 1.5, (8, 16), parallel=2).values(),
        )

    with tempfile.TemporaryDirectory() as tmp:
        grpc_address = f"127.0.0.1:{free_port()}"
        process, url = start_server(
            Path(tmp) / "home", cache, args.threads, "--grpc-port", grpc_address.rsplit(":", 1)[1]
        )
        try:
            key = (Path(tmp) / "home" / "admin.key").read_text().strip()
            auth = {"Authorization": f"Bearer {key}"}
            httpx.post(f"{url}/v2/repository/models/iris/load", timeout=60, headers=auth).raise_for_status()
            httpx.post(f"{url}/v2/repository/models/minilm/load", timeout=120, headers=auth).raise_for_status()
            time.sleep(1)
            idle_rss = rss_mb(process.pid)
            served: dict[str, list[LoadResult]] = {"iris": [], "minilm": [], "iris-grpc": [], "minilm-grpc": []}
            for concurrency in CONCURRENCY:
                result = run_wrk(
                    wrk, f"{url}/v2/models/iris/infer", wrk_script([iris_v2_body()], key), concurrency, args.seconds
                )
                served["iris"].append(result)
                print(
                    f"iris   c={concurrency:>2}: {result.requests_per_s:8.0f} req/s  p50 {result.p50_ms:6.2f} ms"
                    f"  p99 {result.p99_ms:6.2f} ms  errors {result.errors}",
                    flush=True,
                )
                # gRPC right after HTTP at the same concurrency: the machine drifts over minutes.
                request = iris_grpc_request()
                size = response_frame_size(grpc_address, request, key)
                result = run_h2load(h2load, grpc_address, request, key, concurrency, args.seconds, size)
                served["iris-grpc"].append(result)
                print(
                    f"iris   c={concurrency:>2} gRPC: {result.requests_per_s:8.0f} req/s  p50 {result.p50_ms:6.2f} ms"
                    f"  p99 {result.p99_ms:6.2f} ms  errors {result.errors}",
                    flush=True,
                )
            adjacent: list[float] = []
            for concurrency in CONCURRENCY:
                # This machine's speed drifts by tens of percent over minutes (shared host), so each
                # served level is compared with a ceiling measured just before it, server idle.
                adjacent.append(ceiling_now())
                result = run_wrk(
                    wrk,
                    f"{url}/openai/v1/embeddings",
                    wrk_script(minilm_openai_bodies(texts), key),
                    concurrency,
                    args.seconds,
                )
                served["minilm"].append(result)
                print(
                    f"minilm c={concurrency:>2}: {result.requests_per_s:8.1f} req/s  p50 {result.p50_ms:6.2f} ms"
                    f"  p99 {result.p99_ms:6.2f} ms  errors {result.errors}  (ceiling just before: "
                    f"{adjacent[-1]:.1f}/s, ratio {result.requests_per_s / adjacent[-1]:.1%})",
                    flush=True,
                )
            adjacent_grpc: list[float] = []
            # h2load sends one body: the sentence of median token length stands for the rotation.
            median_text = sorted(zip(lengths, texts, strict=True))[len(texts) // 2][1]
            request = minilm_grpc_request(median_text)
            size = response_frame_size(grpc_address, request, key)
            # Its ceiling runs on that sentence too: batches of one length, no padding (the rotation's
            # batches pad to their longest sentence, which would flatter gRPC by comparison).
            same_text = [median_text] * len(texts)
            for concurrency in CONCURRENCY:
                adjacent_grpc.append(ceiling_now(same_text))
                result = run_h2load(h2load, grpc_address, request, key, concurrency, args.seconds, size)
                served["minilm-grpc"].append(result)
                print(
                    f"minilm c={concurrency:>2} gRPC: {result.requests_per_s:8.1f} req/s  p50 {result.p50_ms:6.2f} ms"
                    f"  p99 {result.p99_ms:6.2f} ms  errors {result.errors}  (ceiling just before: "
                    f"{adjacent_grpc[-1]:.1f}/s, ratio {result.requests_per_s / adjacent_grpc[-1]:.1%})",
                    flush=True,
                )
            # The two gRPC targets once more, in rounds seconds apart: one run per level above is at the
            # mercy of whatever else this shared machine does that minute.
            seconds = min(args.seconds, 5)
            iris_body, iris_request = wrk_script([iris_v2_body()], key), iris_grpc_request()
            iris_size = response_frame_size(grpc_address, iris_request, key)
            iris_pairs = alternating(
                args.rounds,
                (process.pid, url, key),
                lambda: run_wrk(wrk, f"{url}/v2/models/iris/infer", iris_body, 32, seconds),
                lambda: run_h2load(h2load, grpc_address, iris_request, key, 32, seconds, iris_size),
            )
            minilm_ceilings, minilm_served = [ceiling_now(same_text)], []
            for _ in range(args.rounds):
                minilm_served.append(run_h2load(h2load, grpc_address, request, key, 32, seconds, size).requests_per_s)
                minilm_ceilings.append(ceiling_now(same_text))
            targets = target_lines(iris_pairs, minilm_served, minilm_ceilings)
            print("\n".join(targets), flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
    overhead_lines = measure_overhead(wrk, cache, args.threads, min(args.seconds, 5))
    print("inference log: log off against every request logged with payloads ...", flush=True)
    logging_lines = measure_logging(wrk, cache, args.threads, min(args.seconds, 5))

    iris_best, minilm_best = max(iris_rates.values()), max(minilm_rates.values())
    lines = [
        "| workload | concurrency | served req/s | p50 ms | p99 ms | ceiling items/s | served / ceiling | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *table("iris (V2 JSON, 1 row)", served["iris"], [iris_best] * len(served["iris"])),
        *table("minilm (OpenAI embeddings, 1 sentence)", served["minilm"], adjacent),
        *table("iris (gRPC, raw FP32, 1 row)", served["iris-grpc"], [iris_best] * len(served["iris-grpc"])),
        *table("minilm (gRPC, BYTES, 1 sentence)", served["minilm-grpc"], adjacent_grpc),
    ]
    at32 = CONCURRENCY.index(32)
    grpc_vs_rest = served["iris-grpc"][at32].requests_per_s / served["iris"][at32].requests_per_s
    minilm_grpc_ratio = served["minilm-grpc"][at32].requests_per_s / adjacent_grpc[at32]
    ceiling_lines = [
        "| model | batch | in-process items/s |",
        "| --- | --- | --- |",
        *(f"| iris | {b} | {r:,.0f} |" for b, r in iris_rates.items()),
        *(f"| minilm encoder | {b} | {r:,.1f} |" for b, r in minilm_rates.items()),
    ]
    summary = [
        f"- In-process ceiling at the best batch size: iris {iris_best:,.0f} rows/s, "
        f"minilm {minilm_best:,.1f} sentences/s.",
        f"- Sentences: {len(texts)} of 18 words, {min(lengths)}-{max(lengths)} tokens (seq len incl. CLS/SEP).",
        f"- Idle server RSS with iris and minilm loaded: {idle_rss:.0f} MB.",
        f"- gRPC at concurrency 32: iris {grpc_vs_rest:.2f}x the V2 REST figure of this run (target: at least "
        f"1.00x); minilm {minilm_grpc_ratio:.1%} of the ceiling measured just before it (target: at least 90%).",
    ]
    print("\n" + "\n".join(ceiling_lines) + "\n\n" + "\n".join(lines) + "\n\n" + "\n".join(summary))
    print("\n" + "\n".join(overhead_lines))
    print("\n" + "\n".join(logging_lines))
    if args.write:
        write_report(lines, ceiling_lines, [*summary, "", *targets, "", *overhead_lines, "", *logging_lines], args)


#: Configurations whose iris throughput is compared: what auth and usage metering cost per request.
OVERHEAD_CONFIGS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "keys + metering (default)": ((), {}),
    "keys, metering off": ((), {"STRATUS_USAGE_METERING": "false"}),
    "no auth, metering off": (("--no-auth",), {"STRATUS_USAGE_METERING": "false"}),
}


def time_metering_hook(calls: int = 200_000) -> float:
    """Microseconds of metering work per served request, in-process: what the data plane adds for a
    listener (the ServedRequest) and what the usage meter does with it (a locked counter update)."""
    import numpy as np

    from stratus import tenancy
    from stratus.dataplane import ServedRequest
    from stratus.metering import Prices, UsageMeter
    from stratus.store import Database

    inputs = {"input": np.zeros((1, 4), dtype=np.float32)}
    outputs = {"label": np.zeros(1, dtype=np.int64)}
    with tempfile.TemporaryDirectory() as tmp:
        meter = UsageMeter(Database(f"sqlite:///{tmp}/usage.db"), flush_seconds=3600, prices=Prices())
        started = time.perf_counter()
        for _ in range(calls):
            tokens = outputs.get("token_count")
            served = ServedRequest(
                tenancy.current(), "iris", 1, "v2", int(inputs["input"].shape[0]),
                int(tokens.sum()) if tokens is not None else 0, 0.0002, inputs,
            )  # fmt: skip
            meter.record(served.caller.project, served.caller.key_id, served.model, items=served.items,
                         tokens=served.tokens, compute_ms=served.seconds * 1000.0)  # fmt: skip
        return (time.perf_counter() - started) / calls * 1e6


def measure_overhead(wrk: str, cache: Path, threads: int, seconds: float, rounds: int = 5) -> list[str]:
    """iris V2 at concurrency 32 on three servers, in alternating rounds. The machine drifts by tens of
    percent from minute to minute, so each cost is the median of its per-round ratios (runs seconds apart),
    not a ratio of medians taken minutes apart."""
    rates: dict[str, list[float]] = {name: [] for name in OVERHEAD_CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        try:
            for index, (name, (extra, env)) in enumerate(OVERHEAD_CONFIGS.items()):
                home = Path(tmp) / f"home{index}"
                process, url = start_server(home, cache, threads, *extra, env_extra=env)
                key = (home / "admin.key").read_text().strip()
                headers = {"Authorization": f"Bearer {key}"}
                httpx.post(f"{url}/v2/repository/models/iris/load", timeout=60, headers=headers).raise_for_status()
                servers[name] = (process, url, key)
            names = list(servers)
            for round_index in range(rounds):
                # The order rotates each round, so no configuration always runs first (or last) in a round.
                for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
                    _, url, key = servers[name]
                    result = run_wrk(wrk, f"{url}/v2/models/iris/infer", wrk_script([iris_v2_body()], key), 32, seconds)
                    assert result.errors == 0, f"{name}: {result.errors} errors"
                    rates[name].append(result.requests_per_s)
        finally:
            for process, _, _ in servers.values():
                process.terminate()
                process.wait(timeout=30)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    metering_us = time_metering_hook()
    metered, base, bare = (rates[name] for name in OVERHEAD_CONFIGS)
    round_costs = [1 - m / b for m, b in zip(metered, base, strict=True)]
    metering_cost = statistics.median(round_costs)
    request_us = 1e6 / medians["keys, metering off"]
    auth_cost = statistics.median(1 - b / n for b, n in zip(base, bare, strict=True))
    lines = [
        f"Cost of security on iris (V2 JSON, 1 row, concurrency 32): {rounds} rounds, each running the three "
        f"configurations one after another (order rotated each round) for {seconds:.0f} s; a cost is the median "
        "of its per-round ratios.",
        "",
        "| configuration | req/s (median) | runs |",
        "| --- | --- | --- |",
        *(f"| {n} | {medians[n]:,.0f} | {', '.join(f'{v:,.0f}' for v in rates[n])} |" for n in OVERHEAD_CONFIGS),
        "",
        f"- Usage metering costs {metering_cost:.1%} of iris throughput (target: under 2%); the per-round "
        f"costs spread from {min(round_costs):.1%} to {max(round_costs):.1%}, the resolution of this machine.",
        f"- API key verification costs {auth_cost:.1%}.",
        f"- Timed in-process instead, metering's work per request (the served-request record the data plane "
        f"builds, and the meter's counter update) is {metering_us:.1f} us: {metering_us / request_us:.2%} "
        f"of the time per request of the metering-off server above ({request_us:.0f} us).",
    ]
    for line in lines:
        print(line, flush=True)
    return lines


def write_report(lines: list[str], ceiling_lines: list[str], summary: list[str], args: argparse.Namespace) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = f"""# Benchmarks

Measured by `make bench` (`.venv/bin/python -m benchmarks --seconds {args.seconds:.0f} --write`) on {stamp}.

Machine: {machine()}. The load generators (wrk for HTTP, h2load for gRPC, one thread each) run on the
same machine as the server, so the server has less than the 2 cores. Each gRPC level runs right after the
HTTP one at the same concurrency; h2load sends one body, so minilm over gRPC repeats the sentence of median
token length where the HTTP run rotates through all of them. ONNX Runtime uses {args.threads} intra-op
threads in both the server and the ceiling.

## Served, against the in-process ceiling

{chr(10).join(lines)}

"served / ceiling" divides the served requests/s (one item per request) by the in-process ceiling at its
best batch size, the physical limit of the model on this machine. For iris that ceiling is ONNX Runtime
on batches of 256 rows, far beyond what one-row HTTP requests can reach: its target is absolute (4,000
requests/s with p99 under 15 ms at concurrency 32). For minilm the ceiling (the best of batch 8 and
16, run one at a time with all threads or two at a time with the threads split) is measured again just
before each concurrency level, with the server idle, because this shared machine's speed drifts by tens
of percent from minute to minute.

Where the time goes. Profiled in process (cProfile; iris, V2 JSON, 32 concurrent requests through the
ASGI app), matching each request against every route and solving FastAPI's dependencies took about half
of the app's 193 us per request. The inference routes now take a fast lane (`stratus/api/fastlane.py`,
see docs/architecture.md): 98 us per request in the same measurement, and iris at concurrency 32 went
from 3,865 requests/s (p99 15.1 ms, the last run without the lane) to the figure above. For minilm, each
of the two inference threads spent 91% of its wall time inside `Session.run` before the lane (py-spy
`record --nonblocking --threads` under wrk at concurrency 32), and the event loop about 11% of one core
on HTTP, routing, auth and JSON: on a 2-core machine shared with wrk, that is CPU ONNX Runtime does not
get. Served minilm stayed at 243-246 requests/s then, whatever the batching config, at 83-91% of a
ceiling that itself read 268-296 sentences/s minutes apart.

gRPC. The gRPC server speaks HTTP/2 itself (`stratus/grpc/h2.py`) in the HTTP server's event loop, where
the data plane's batcher lives. Until 2026-12-02 it was grpc.aio, and iris over gRPC served 0.36-0.64 of
the REST figure at concurrency 32. Measured then (h2load or wrk at concurrency 32, the server process's
CPU time per call from /proc/PID/stat, on a busy machine): a server answering a fixed message with no
work at all cost 140-199 us per call under grpc.aio (six runs), 26-28 us with the server's own HTTP/2
(two) and 27-29 us for a bare uvicorn ASGI app over HTTP/1.1 (three), while a whole V2 REST iris request
took 137 us of the event loop's CPU: no grpc.aio server could serve as many calls as REST. grpc.aio also
handed calls to the loop one by one (iris batches averaged 1.4 rows over gRPC against 16 over REST); the
server's own HTTP/2 hands over all the calls one read brings in the same loop turn, as uvicorn does, and
gRPC batches average 15-16 rows too. Five alternating rounds on one server (iris, 5 s each, load average
9-11 from other work): gRPC 3,309-5,352 requests/s at 143-162 us of server CPU per call, V2 REST
1,895-4,091 at 173-213 us.

## In-process ceiling (plain ONNX Runtime, same model files and threads)

{chr(10).join(ceiling_lines)}

{chr(10).join(summary)}
"""
    doc = ROOT / "docs" / "benchmarks.md"
    # Keep the sections that `python -m benchmarks.startup --write` and `benchmarks.sdk_encoding --write`
    # record in the same file.
    previous = doc.read_text() if doc.exists() else ""
    for name in ("startup", "sdk", "console"):
        begin, end = f"<!-- bench-{name}:begin -->", f"<!-- bench-{name}:end -->"
        if begin in previous and end in previous:
            text = text.rstrip("\n") + "\n\n" + begin + previous.split(begin, 1)[1].split(end, 1)[0] + end + "\n"
    doc.write_text(text)
    print("\nwrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
