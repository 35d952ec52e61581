"""Start-up benchmark: ``python -m benchmarks.startup [--runs 3] [--write]`` (also ``make bench-startup``).

Measures what a user waits for every day: a new home's first `stratus serve` until /v2/health/ready (the
samples imported from the machine's shared cache, which `make install` filled), the same with no bytecode
cached at all (PYTHONPYCACHEPREFIX pointing at an empty folder: an upper bound for the first start of a
fresh clone), and the CLI's `stratus --help` and `stratus models list` against a running server, timed by
hyperfine (Debian's `hyperfine` package). --write records them in docs/benchmarks.md between markers
that `make bench --write` keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.__main__ import free_port, machine
from benchmarks.report import write_section
from stratus.samples import ensure_samples
from stratus.settings import Settings

BEGIN, END = "<!-- bench-startup:begin -->", "<!-- bench-startup:end -->"
STRATUS = str(Path(sys.executable).with_name("stratus"))


def first_start(env_extra: dict[str, str] | None = None) -> tuple[float, str, Path, subprocess.Popen[bytes]]:
    """Seconds from spawning `stratus serve` on a new home to ready; returns the server still running."""
    home = Path(tempfile.mkdtemp(prefix="stratus-bench-home-")) / "home"
    port = free_port()
    env = {**os.environ, **(env_extra or {})}
    started = time.monotonic()
    process = subprocess.Popen(
        # No gRPC: its default port may be taken by another server on this machine.
        [STRATUS, "serve", "--port", str(port), "--home", str(home), "--log-level", "warning", "--grpc-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = started + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                return time.monotonic() - started, url, home, process
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    process.kill()
    raise SystemExit("the server did not become ready in 600 s")


def stop(process: subprocess.Popen[bytes], home: Path) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    shutil.rmtree(home.parent, ignore_errors=True)


def starts(runs: int, env_extra: dict[str, str] | None = None) -> list[float]:
    seconds = []
    for _ in range(runs):
        ready, _, home, process = first_start(env_extra)
        seconds.append(ready)
        stop(process, home)
    return seconds


def hyperfine(commands: list[str], env: dict[str, str], runs: int) -> list[dict[str, float]]:
    if shutil.which("hyperfine") is None:
        raise SystemExit("hyperfine is not installed: apt-get install -y hyperfine")
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            ["hyperfine", "-N", "--warmup", "3", "--runs", str(runs), "--export-json", out.name, *commands],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        results: list[dict[str, float]] = json.loads(Path(out.name).read_text())["results"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="new homes started per case")
    parser.add_argument("--cli-runs", type=int, default=20, help="hyperfine runs per CLI command")
    parser.add_argument("--write", action="store_true", help="record the results in docs/benchmarks.md")
    args = parser.parse_args()

    cache = Settings().resolved_sample_cache_dir
    ensure_samples(cache)  # what `make install` did; a no-op when the cache is there
    warm = starts(args.runs)
    with tempfile.TemporaryDirectory(prefix="stratus-no-pyc-") as empty:
        cold = starts(args.runs, {"PYTHONPYCACHEPREFIX": empty})

    _, url, home, process = first_start()
    try:
        env = {**os.environ, "STRATUS_URL": url, "STRATUS_HOME": str(home)}
        cli = hyperfine([f"{STRATUS} --help", f"{STRATUS} models list"], env, args.cli_runs)
    finally:
        stop(process, home)

    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s (runs: {', '.join(f'{v:.2f}' for v in values)})"

    lines = [
        "| what | measured |",
        "| --- | --- |",
        f"| a new home's first start, samples imported from the shared cache, until ready | {fmt(warm)} |",
        f"| the same with no bytecode cached (upper bound for a fresh clone after `make install`) | {fmt(cold)} |",
    ]
    for result, name in zip(cli, ("stratus --help", "stratus models list (3 models, running server)"), strict=True):
        lines.append(
            f"| `{name}` (hyperfine, {args.cli_runs} runs) | mean {result['mean'] * 1000:.0f} ms "
            f"± {result['stddev'] * 1000:.0f} ms, min {result['min'] * 1000:.0f} ms, "
            f"user {result['user'] * 1000:.0f} ms, system {result['system'] * 1000:.0f} ms |"
        )
    for line in lines:
        print(line)
    if args.write:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        load = os.getloadavg()[0]
        block = "\n".join(
            [
                BEGIN,
                "## Start-up and the CLI",
                "",
                f"Measured by `make bench-startup` (`.venv/bin/python -m benchmarks.startup --runs {args.runs} "
                f"--write`) on {stamp}, load average {load:.1f} at the end (other work shared the 2 cores).",
                f"Machine: {machine()}. Targets: a new home ready in under 5 s, a fresh clone's first start in",
                "under 10 s, `stratus --help` under 0.3 s, `stratus models list` under 0.8 s.",
                "",
                *lines,
                "",
                "The CLI rows run `hyperfine -N --warmup 3 --runs N '.venv/bin/stratus --help' "
                "'.venv/bin/stratus models list'` with `STRATUS_URL` and `STRATUS_HOME` pointing at a server "
                "started for the purpose. Before",
                "issue #14, `stratus --help` took 2.05 s (the CLI imported the server, numpy and ONNX Runtime), and",
                "every new home trained and exported the samples on its first start (20 s quiet, 2 min 40 s busy). The",
                "build now runs once per machine, in `make install` (`python -m stratus.samples`): 17.4 s on a quiet",
                "machine here, 2 min 44 s with the 2 cores crowded.",
                END,
            ]
        )
        write_section(BEGIN, END, block)


if __name__ == "__main__":
    main()
