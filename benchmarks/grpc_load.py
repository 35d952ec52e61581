"""Load over gRPC from h2load (nghttp2's C load generator: HTTP/2 like gRPC, so the client is not the
bottleneck), one connection per concurrent request like wrk's runs.

h2load knows HTTP/2, not gRPC: it sends a fixed body (a framed ModelInferRequest) and counts HTTP statuses,
and a gRPC error comes back as HTTP 200 with a non-zero ``grpc-status`` trailer. So every successful
response's size is measured first (one call through grpcio), and a run counts as errors the responses
its received data falls short of.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import struct
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx

from benchmarks.load import LoadResult, _is_root
from stratus.grpc.inference_pb2_grpc import GRPCInferenceServiceStub

INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"


def ensure_h2load() -> str:
    """h2load comes from Debian's nghttp2-client; installed when missing and we may (root)."""
    path = shutil.which("h2load")
    if path is None and shutil.which("apt-get") and _is_root():
        for command in (["apt-get", "install", "-y", "-qq", "nghttp2-client"], ["apt-get", "update", "-qq"]):
            subprocess.run(command, check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], check=False, capture_output=True)
        path = shutil.which("h2load")
    if path is None:
        raise SystemExit("the gRPC benchmark needs h2load: install it with `apt-get install nghttp2-client`")
    return path


def frame(message: Any) -> bytes:
    """A gRPC message on the wire: not compressed (0), its length (4 bytes, big-endian), the message."""
    body: bytes = message.SerializeToString()
    return b"\0" + struct.pack(">I", len(body)) + body


def response_frame_size(address: str, request: Any, key: str) -> int:
    """The bytes of one successful response (checked: a failing call raises here, before any load)."""
    with grpc.insecure_channel(address) as channel:
        response = GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=(("authorization", f"Bearer {key}"),), timeout=60
        )
    return len(frame(response))


def run_h2load(
    h2load: str, address: str, request: Any, key: str, concurrency: int, seconds: float, expected_bytes: int
) -> LoadResult:
    with tempfile.TemporaryDirectory() as tmp:
        body, log = Path(tmp) / "body", Path(tmp) / "log"
        body.write_bytes(frame(request))
        output = subprocess.run(
            [
                h2load,
                f"--duration={seconds:.0f}",
                "--warm-up-time=1",
                f"--clients={concurrency}",
                "--max-concurrent-streams=1",
                "--threads=1",
                f"--data={body}",
                "--header=content-type: application/grpc",
                "--header=te: trailers",
                f"--header=authorization: Bearer {key}",
                f"--log-file={log}",
                f"http://{address}{INFER_PATH}",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
        durations_ms = sorted(
            int(fields[2]) / 1000 for fields in (line.split("\t") for line in log.read_text().splitlines()) if fields
        )
    return parse_h2load(output, concurrency, durations_ms, expected_bytes)


def parse_h2load(output: str, concurrency: int, durations_ms: list[float], expected_bytes: int) -> LoadResult:
    rate = float(re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", output).group(1))  # type: ignore[union-attr]
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", output)
    assert done is not None, output
    succeeded, failed = int(done.group(2)), int(done.group(3))
    data = int(re.search(r"\((\d+)\) data", output).group(1))  # type: ignore[union-attr]
    # Responses that carried no full message were gRPC errors (HTTP 200, grpc-status in the trailers).
    short = max(0, succeeded - data // expected_bytes)
    quantiles = statistics.quantiles(durations_ms, n=100) if len(durations_ms) > 1 else [float("nan")] * 99
    return LoadResult(concurrency, rate, quantiles[49], quantiles[98], succeeded + failed, failed + short)


#: One measurement: requests/s under the load generator, and the server process's CPU time (all its
#: threads) per request it served meanwhile, in microseconds, which the machine's load moves far less.
Measured = tuple[float, float]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served_requests(url: str, key: str) -> float:
    """Inference requests the server has answered, all protocols (its /metrics counter)."""
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=60).text
    prefix = "stratus_inference_requests_total{"
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def alternating(
    rounds: int, server: tuple[int, str, str], first: Callable[[], LoadResult], second: Callable[[], LoadResult]
) -> list[tuple[Measured, Measured]]:
    """``rounds`` pairs of measurements taken seconds apart on the server ``(pid, url, key)``, the order
    swapped every round so neither always runs first: on this shared machine only figures this close
    together compare."""
    pid, url, key = server

    def measure(run: Callable[[], LoadResult]) -> Measured:
        cpu, count = cpu_seconds(pid), served_requests(url, key)
        result = run()
        cpu, count = cpu_seconds(pid) - cpu, served_requests(url, key) - count
        return result.requests_per_s, cpu / max(count, 1) * 1e6

    pairs = []
    for index in range(rounds):
        if index % 2:
            b = measure(second)
            a = measure(first)
        else:
            a = measure(first)
            b = measure(second)
        pairs.append((a, b))
    return pairs


def against_neighbours(served: list[float], ceilings: list[float]) -> list[float]:
    """Each served rate over the mean of the ceilings measured just before and just after it
    (``ceilings`` has one more entry than ``served``)."""
    return [rate / ((ceilings[i] + ceilings[i + 1]) / 2) for i, rate in enumerate(served)]


def target_lines(iris: list[tuple[Measured, Measured]], minilm: list[float], minilm_ceilings: list[float]) -> list[str]:
    """The two gRPC targets of issue #15 at concurrency 32, as medians of per-round ratios."""
    iris_ratios = [g[0] / r[0] for r, g in iris]
    rest_cpu, grpc_cpu = statistics.median(r[1] for r, _ in iris), statistics.median(g[1] for _, g in iris)
    minilm_ratios = against_neighbours(minilm, minilm_ceilings)
    return [
        f"gRPC targets at concurrency 32, measured in rounds on one server (a ratio per round, its median "
        f"reported): iris over gRPC (h2load) against V2 REST (wrk), {len(iris)} rounds alternating the two; "
        f"minilm over gRPC against the in-process ceiling measured just before and just after each round "
        f"(the mean of the two).",
        "",
        "| target | median ratio | per round |",
        "| --- | --- | --- |",
        f"| iris gRPC / V2 REST req/s (at least 1.00) | {statistics.median(iris_ratios):.2f} | "
        + ", ".join(f"{g[0]:,.0f}/{r[0]:,.0f}" for r, g in iris)
        + " |",
        f"| server CPU per iris request, gRPC / V2 REST | {grpc_cpu / rest_cpu:.2f} | "
        + ", ".join(f"{g[1]:.0f}/{r[1]:.0f} us" for r, g in iris)
        + " |",
        f"| minilm gRPC / ceiling (at least 0.90) | {statistics.median(minilm_ratios):.2f} | "
        + ", ".join(f"{s:.1f}/{c:.1f}" for s, c in zip(minilm, minilm_ceilings, strict=False))
        + f" (last ceiling {minilm_ceilings[-1]:.1f}) |",
    ]
