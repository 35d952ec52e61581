"""The SDK's tensor encodings against a local server: ``python -m benchmarks.sdk_encoding [--rounds 7] [--write]``.

`Client.predict` sends binary tensors (Triton's binary tensor extension) and asks for binary outputs from
``BINARY_FROM_ELEMENTS`` input elements on, JSON below. This times both on one-row and batched requests,
alternating the two encodings round by round (the host's speed drifts), and with --write records the
table in docs/benchmarks.md between markers that `make bench --write` keeps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from benchmarks.__main__ import free_port, machine
from benchmarks.report import write_section
from stratus import Client
from stratus.sdk.client import BINARY_FROM_ELEMENTS

BEGIN, END = "<!-- bench-sdk:begin -->", "<!-- bench-sdk:end -->"
CALLS = 40


def _serve(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "STRATUS_INTRA_OP_THREADS": "1"}
    args = [sys.executable, "-m", "stratus", "serve", "--port", str(port), "--home", str(home)]
    process = subprocess.Popen(
        [*args, "--log-level", "warning", "--grpc-port", "0"], env=env, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help=f"rounds of {CALLS} calls per encoding and case")
    parser.add_argument("--write", action="store_true", help="record the table in docs/benchmarks.md")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = {
        "iris, 1 row": ("iris", rng.random((1, 4), dtype=np.float32)),
        "iris, 512 rows": ("iris", rng.random((512, 4), dtype=np.float32)),
        "digits, 256 rows (256 x 1 x 8 x 8)": ("digits", rng.random((256, 1, 8, 8), dtype=np.float32)),
    }
    lines = ["| request | binary ms per call | JSON ms per call |", "| --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        process, url = _serve(home)
        try:
            with Client(url, api_key=(home / "admin.key").read_text().strip()) as client:
                for label, (model, x) in cases.items():
                    binary, plain = client.predict(model, x, binary=True), client.predict(model, x, binary=False)
                    assert all(np.allclose(binary[k], plain[k]) for k in binary), label
                    times: dict[bool, list[float]] = {True: [], False: []}
                    for _ in range(args.rounds):
                        for encoding in (True, False):
                            started = time.perf_counter()
                            for _ in range(CALLS):
                                client.predict(model, x, binary=encoding)
                            times[encoding].append((time.perf_counter() - started) / CALLS * 1e3)
                    row = f"| {label} | {statistics.median(times[True]):.2f} | {statistics.median(times[False]):.2f} |"
                    print(row, flush=True)
                    lines.append(row)
        finally:
            process.terminate()
            process.wait(timeout=30)
    if args.write:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        section = "\n".join(
            [
                BEGIN,
                "## The SDK's tensor encoding",
                "",
                "`Client.predict` sends binary tensors (Triton's binary tensor extension) and asks for binary outputs",
                f"from {BINARY_FROM_ELEMENTS} input elements on, JSON below (`binary=True` or `False` forces one).",
                f"Measured by `.venv/bin/python -m benchmarks.sdk_encoding --rounds {args.rounds} --write` on {stamp}",
                f"against a local server (one ONNX Runtime thread), the median of {args.rounds} rounds of {CALLS} "
                "calls, the encodings alternating.",
                f"Machine: {machine()}.",
                "",
                *lines,
                END,
            ]
        )
        write_section(BEGIN, END, section)


if __name__ == "__main__":
    main()
