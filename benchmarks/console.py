"""The web console's pages with a big store: HTML time per page, page weight and first paint in Chromium.

    make bench     # runs it after the data-plane benchmark; alone: .venv/bin/python -m benchmarks.console [--write]

Seeds a fresh home directly through the store (1,000 models of 10 versions each, 10,000 jobs with their events,
a dataset), starts a real server on a free loopback port with one endpoint, signs in to the console over HTTP and
times every page's HTML (sequential GETs, gzip accepted, median and p90 of --rounds). Then headless Chromium
(Debian's, through Playwright) opens each page once, as a first visit: the bytes transferred (compressed, the page
and everything it loads) and its first paint and first contentful paint. Targets (#17): median HTML < 100 ms, a page
< 300 KB transferred, first paint < 1 s. --write records the table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert, select

from benchmarks.__main__ import free_port, machine
from benchmarks.report import write_section
from stratus.platform import Platform
from stratus.samples import ensure_samples
from stratus.settings import Settings
from stratus.store.tables import Alias, Job, JobEvent, Model, ModelVersion, Project
from stratus.types import Signature

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench-console:begin -->", "<!-- bench-console:end -->"
TARGET_MS, TARGET_BYTES, TARGET_PAINT_MS = 100.0, 300 * 1024, 1000.0


def seed(home: Path, cache: Path, models: int, versions: int, jobs: int) -> dict[str, str]:
    """The store of a busy platform, written in bulk: every version points at one real iris ONNX blob."""
    platform = Platform(Settings(home=home, samples=False, sample_cache_dir=cache))
    platform.db.migrate()
    iris = next(s for s in ensure_samples(cache).models if s.name == "iris")
    data, files = iris.read()
    first = platform.registry.import_verified(
        "bench-0000", data, iris.format, Signature.from_dict(iris.signature), files, metrics=dict(iris.metrics)
    )
    dataset = platform.datasets.register_builtin("bench-iris", "iris")
    lineage = f"bench-iris@{dataset['digest']}"
    now = datetime.now(UTC).replace(tzinfo=None)
    classes = {c: {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 12} for c in ("0", "1", "2")}
    job_ids = [uuid.uuid4().hex for _ in range(jobs)]
    with platform.db.write() as s:
        project = s.scalar(select(Project.id).where(Project.name == "default"))
        s.execute(
            insert(Model),
            [
                {
                    "project_id": project,
                    "name": f"bench-{m:04d}",
                    "task": "classification",
                    "tags": {},
                    "description": "",
                }
                for m in range(1, models)
            ],
        )
        ids = dict(s.execute(select(Model.name, Model.id).where(Model.project_id == project)).all())
        rows = []
        for name, model_id in ids.items():
            for v in range(1, versions + 1):
                if name == "bench-0000" and v == 1:
                    continue
                job = job_ids[(model_id * versions + v) % jobs]
                rows.append(
                    {
                        "model_id": model_id,
                        "version": v,
                        "digest": first.digest,
                        "size_bytes": first.size_bytes,
                        "format": "onnx",
                        "signature": iris.signature,
                        "metrics": {
                            "test_accuracy": 0.9 + v / 1000,
                            "macro_f1": 0.88,
                            "per_class": classes,
                            "confusion_matrix": [[12, 0, 0], [0, 11, 1], [0, 1, 11]],
                        },
                        "params": {"trainer": "logistic_regression", "job_id": job, "C": 1.0 + v},
                        "config": {},
                        "parent_version": v - 1 if v > 1 and v % 3 == 0 else None,
                        "dataset": lineage,
                        "source": "bench-seed",
                        "description": "",
                        "created_at": now - timedelta(minutes=versions - v),
                    }
                )
        s.execute(insert(ModelVersion), rows)
        latest = s.execute(select(ModelVersion.id, ModelVersion.model_id).where(ModelVersion.version == 1)).all()
        s.execute(insert(Alias), [{"model_id": m, "name": "production", "version_id": v} for v, m in latest])
        report = {
            "kind": "classifier",
            "parent": {
                "quality": {"accuracy": 0.95},
                "size_bytes": 2000,
                "p50_ms_batch1": 0.08,
                "throughput_batch32": 90000,
            },
            "variants": [
                {
                    "method": method,
                    "version": 2 + i,
                    "quality": {"accuracy": 0.95 - 0.01 * i},
                    "quality_drop": 0.01 * i,
                    "size_bytes": 1200 - 300 * i,
                    "p50_ms_batch1": 0.06 - 0.01 * i,
                    "throughput_batch32": 110000 + 10000 * i,
                    "speedup": 1.2 + 0.1 * i,
                    "within_budget": True,
                }
                for i, method in enumerate(("quantize-dynamic", "fp16"))
            ],
            "recommendation": None,
        }
        job_rows, events = [], []
        for i, job_id in enumerate(job_ids):
            compress = i % 10 == 0
            job_rows.append(
                {
                    "id": job_id,
                    "project_id": project,
                    "kind": "compress" if compress else "train",
                    "state": "succeeded",
                    "spec": {
                        "model": "bench-0001",
                        "version": 1,
                        "methods": ["quantize-dynamic", "fp16"],
                        "budget": 0.01,
                    }
                    if compress
                    else {"request": {"dataset": "bench-iris", "model": "mlp", "params": {"epochs": 20}}},
                    "progress": {"epoch": 10, "epochs": 10},
                    "metrics": report if compress else {"test_accuracy": 0.93},
                    "model_name": f"bench-{i % models:04d}",
                    "model_version": 1,
                    "created_at": now - timedelta(seconds=jobs - i),
                    "finished_at": now - timedelta(seconds=jobs - i - 1),
                }
            )
            seq = [("state", {"state": "queued"}), ("state", {"state": "running"})]
            if not compress:
                seq += [("epoch", {"epoch": e, "epochs": 10, "loss": 1.0 / e, "val_metric": 0.9}) for e in range(1, 11)]
            seq.append(("state", {"state": "succeeded"}))
            events += [{"job_id": job_id, "seq": n + 1, "kind": k, "data": d} for n, (k, d) in enumerate(seq)]
        s.execute(insert(Job), job_rows)
        s.execute(insert(JobEvent), events)
    platform.close()
    return {"train": job_ids[-1], "compress": job_ids[-10 if jobs >= 10 else 0]}


def start(home: Path, cache: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "STRATUS_SAMPLE_CACHE_DIR": str(cache), "STRATUS_GRPC_PORT": "0"}
    args = [sys.executable, "-m", "stratus", "serve", "--port", str(port), "--home", str(home), "--no-samples"]
    process = subprocess.Popen([*args, "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not become ready")


def pages(jobs: dict[str, str], models: int) -> list[str]:
    middle = f"bench-{models // 2:04d}"
    return [
        "/ui/",
        "/ui/models",
        f"/ui/models?page={max(1, models // 100)}",
        "/ui/models?q=bench-05",
        f"/ui/models/{middle}",
        f"/ui/models/{middle}/versions/2",
        f"/ui/models/{middle}/compare?v=1&v=2&v=3&diff=1",
        "/ui/datasets",
        "/ui/datasets/bench-iris",
        "/ui/jobs",
        "/ui/jobs?page=4",
        f"/ui/jobs/{jobs['train']}",
        "/ui/compression",
        f"/ui/compression/{jobs['compress']}",
        "/ui/endpoints",
        "/ui/endpoints/bench-ep",
        "/ui/usage",
        "/ui/audit",
        "/ui/keys",
        "/ui/projects",
    ]


def cpu_seconds(pid: int) -> float:
    """The server process's CPU time so far (user + system): what a page costs, whatever else the machine runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_pages(
    client: httpx.Client, paths: list[str], rounds: int, pid: int
) -> dict[str, tuple[float, float, int, float]]:
    """Per page: median and p90 of the HTML's time (ms), its compressed size, and the server's CPU ms per view
    (the clock ticks of the process over all rounds, so 10 ms ticks average out), rounds alternating the pages."""
    times: dict[str, list[float]] = {p: [] for p in paths}
    cpu: dict[str, float] = dict.fromkeys(paths, 0.0)
    sizes: dict[str, int] = {}
    for warm in range(2):
        for path in paths:
            answer = client.get(path, headers={"accept-encoding": "gzip"})
            if answer.status_code != 200:
                raise SystemExit(f"{path}: {answer.status_code} {answer.text[:300]}")
            sizes[path] = answer.num_bytes_downloaded if warm else 0
    for _ in range(rounds):
        for path in paths:
            before = cpu_seconds(pid)
            started = time.perf_counter()
            client.get(path, headers={"accept-encoding": "gzip"}).raise_for_status()
            times[path].append((time.perf_counter() - started) * 1000)
            cpu[path] += cpu_seconds(pid) - before
    return {
        p: (
            statistics.median(t),
            statistics.quantiles(t, n=10)[-1] if len(t) >= 10 else max(t),
            sizes[p],
            cpu[p] * 1000 / rounds,
        )
        for p, t in times.items()
    }


def browse(url: str, cookie: str, paths: list[str]) -> dict[str, tuple[int, float, float]]:
    """Per page, a first visit in headless Chromium: bytes transferred, first paint, first contentful paint (ms)."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        print("chromium is not installed (make chromium): no page weight or paint figures")
        return {}
    found: dict[str, tuple[int, float, float]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        for path in paths:
            context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})
            context.add_cookies([{"name": "stratus_console", "value": cookie, "url": url + "/ui/"}])
            page = context.new_page()
            page.goto(path, wait_until="load")
            page.wait_for_load_state("networkidle")
            figures = json.loads(
                page.evaluate(
                    """() => JSON.stringify({
                        bytes: performance.getEntriesByType('navigation').concat(
                            performance.getEntriesByType('resource')).reduce((a, e) => a + e.transferSize, 0),
                        fp: (performance.getEntriesByName('first-paint')[0] || {}).startTime,
                        fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime})"""
                )
            )
            found[path] = (int(figures["bytes"]), float(figures["fp"] or "nan"), float(figures["fcp"] or "nan"))
            context.close()
        browser.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20, help="timed GETs of each page")
    parser.add_argument("--write", action="store_true", help="record the results in docs/benchmarks.md")
    args = parser.parse_args()
    cache = Path(os.environ.get("STRATUS_SAMPLE_CACHE_DIR") or Path.home() / ".cache" / "stratus" / "samples")
    home = Path(tempfile.mkdtemp(prefix="stratus-console-bench-")) / "home"
    started = time.perf_counter()
    jobs = seed(home, cache, args.models, args.versions, args.jobs)
    seeded = time.perf_counter() - started
    print(f"seeded {args.models} models x {args.versions} versions and {args.jobs} jobs in {seeded:.1f} s")
    process, url = start(home, cache)
    try:
        key = (home / "admin.key").read_text().strip()
        api = {"Authorization": f"Bearer {key}"}
        body = {"name": "bench-ep", "targets": [{"model": "bench-0000", "version": "1"}]}
        httpx.post(f"{url}/api/v1/endpoints", json=body, headers=api, timeout=120).raise_for_status()
        with httpx.Client(base_url=url, timeout=60, follow_redirects=False) as client:
            signed = client.post("/ui/sign-in", data={"api_key": key, "next": "/ui/"})
            if signed.status_code != 303:
                raise SystemExit(f"sign-in failed: {signed.status_code}")
            cookie = client.cookies["stratus_console"]
            paths = pages(jobs, args.models)
            timed = time_pages(client, paths, args.rounds, process.pid)
        seen = browse(url, cookie, paths)
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(home.parent, ignore_errors=True)
    lines = [
        "| page | HTML median ms | p90 ms | server CPU ms | HTML gzip KB | transferred KB (first visit) "
        "| first paint ms | FCP ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path in paths:
        median, p90, size, cpu = timed[path]
        weight, fp, fcp = seen.get(path, (0, float("nan"), float("nan")))
        lines.append(
            f"| `{path}` | {median:.1f} | {p90:.1f} | {cpu:.1f} | {size / 1024:.1f} | {weight / 1024:.1f} "
            f"| {fp:.0f} | {fcp:.0f} |"
        )
    worst = max(timed[p][0] for p in paths)
    worst_cpu = max(timed[p][3] for p in paths)
    heaviest = max((w for w, _, _ in seen.values()), default=0)
    slowest_paint = max((fp for _, fp, _ in seen.values()), default=float("nan"))
    verdict = (
        f"Slowest median {worst:.1f} ms (target < {TARGET_MS:.0f}; the most server CPU a page took: "
        f"{worst_cpu:.1f} ms), heaviest page {heaviest / 1024:.1f} KB "
        f"(< {TARGET_BYTES // 1024}), slowest first paint {slowest_paint:.0f} ms (< {TARGET_PAINT_MS:.0f}); "
        f"load average {os.getloadavg()[0]:.1f} at the end."
    )
    for line in [*lines, "", verdict]:
        print(line)
    if args.write:
        write(lines, verdict, args, seeded)


def write(lines: list[str], verdict: str, args: argparse.Namespace, seeded: float) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = "\n".join(
        [
            BEGIN,
            "## The web console's pages (`benchmarks/console.py`, part of `make bench`)",
            "",
            f"Measured on {stamp} (`.venv/bin/python -m benchmarks.console --rounds {args.rounds} --write`): "
            f"{machine()}.",
            f"The store holds {args.models:,} models of {args.versions} versions each and {args.jobs:,} jobs with "
            f"their events (seeded in bulk in {seeded:.0f} s), a dataset and one endpoint. HTML: sequential GETs "
            f"with a signed-in session's cookie, {args.rounds} rounds over all pages after two warm-up rounds; "
            "server CPU is the server process's CPU time per view (from /proc, averaged over the rounds), which "
            "other work on the machine does not inflate as it does the wall time. "
            "Weight and paint: one first visit per page in headless Chromium (a new context, nothing cached).",
            "",
            *lines,
            "",
            verdict,
            END,
        ]
    )
    write_section(BEGIN, END, block)


if __name__ == "__main__":
    main()
