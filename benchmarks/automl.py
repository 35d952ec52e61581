"""AutoML benchmark: ``python -m benchmarks.automl [--write]`` (``make bench-automl``).

On a real server (one job at a time, ``--threads`` threads per job), for breast_cancer, wine and digits
(classification, f1_macro) and diabetes and make_friedman1 with 2,000 rows (regression, r2):

1. every trainer family that fits the dataset is trained with its default parameters as a training job (the
   platform's own ``stratus train``), and its registered version's test-split score read back;
2. one AutoML job with a ``--budget`` (120 s) and ``--ensemble`` 3 is run on the same dataset and split
   (test_split 0.25, seed 0); its time is the server's: from the job's creation to its end, registration
   included. It registers its best configuration, refit, and the averaging ensemble of the best configurations
   of the top 3 families (when they fit in the budget and their outputs combine).

The must-show: every AutoML job ends within budget + 10 s, and its test score is at least the best default's.
Its test score is its best single model's, or the ensemble's when the job itself chose the ensemble (it beat
the best single model on the confirmation folds, before the test split was used); both are printed.
Then one more AutoML job is cancelled while it searches, and the time its cancel call took is printed.
--write records the table in docs/training.md.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.__main__ import machine, start_server
from benchmarks.report import write_section
from stratus.automl.params import families_for
from stratus.sdk import Client

DOC = Path(__file__).resolve().parent.parent / "docs" / "training.md"
BEGIN, END = "<!-- automl:start -->", "<!-- automl:end -->"
DATASETS = (
    ("breast_cancer", "f1_macro"),
    ("wine", "f1_macro"),
    ("digits", "f1_macro"),
    ("diabetes", "r2"),
    ("friedman1", "r2"),
)
#: The test-split metric of a training job's version that is the AutoML metric.
VERSION_METRIC = {"f1_macro": "macro_f1", "r2": "r2"}


def friedman_csv(rows: int = 2000) -> bytes:
    from sklearn.datasets import make_friedman1

    X, y = make_friedman1(n_samples=rows, noise=1.0, random_state=0)
    out = io.StringIO()
    out.write(",".join([*(f"x{i}" for i in range(X.shape[1])), "target"]) + "\n")
    for x, t in zip(X, y, strict=True):
        out.write(",".join(f"{v:.6f}" for v in (*x, t)) + "\n")
    return out.getvalue().encode()


def seconds_between(job: dict[str, Any], start: str, end: str) -> float:
    parse = lambda text: datetime.fromisoformat(text.rstrip("Z"))  # noqa: E731
    return (parse(job[end]) - parse(job[start])).total_seconds()


def run_dataset(client: Client, name: str, metric: str, budget: float, ensemble: int) -> dict[str, Any]:
    record = client._json("GET", f"/api/v1/datasets/{name}")
    defaults: dict[str, float] = {}
    for family in families_for(record):
        job = client.train(name, family, name=f"{name}-{family}-default".replace("_", "-"), wait=False)
        job.wait(timeout_s=1800, raise_on_failure=False)
        if job.state != "succeeded":  # the training path's own failure: no default to compare with
            print(f"  {name} {family} (defaults): job {job.state}: {job.error}", flush=True)
            continue
        version = client._json("GET", f"/api/v1/models/{job.model}/versions/{job.version}")
        defaults[family] = float(version["metrics"][VERSION_METRIC[metric]])
        print(f"  {name} {family} (defaults): {metric} {defaults[family]:.4f}", flush=True)
    job = client.automl(name, metric=metric, budget=budget, name=f"{name}-automl", ensemble=ensemble, wait=False)
    job = job.wait(timeout_s=budget + 120, raise_on_failure=False).data
    board = client.leaderboard(job["id"])
    best_family = max(defaults, key=lambda f: defaults[f])
    if job["state"] != "succeeded":  # recorded as it is, not dropped
        print(f"  {name}: AutoML job {job['state']}: {job['error']}", flush=True)
        failed = {"dataset": name, "metric": metric, "error": f"job {job['state']}: {job['error']}"}
        return failed | {"default_family": best_family, "default": defaults[best_family], "states": {}}
    result = job["metrics"]
    made = result.get("ensemble")
    row = {
        "dataset": name,
        "metric": metric,
        "single": float(result["test_score"]),
        "ensemble": float(made["test_score"]) if made else None,
        "members": "+".join(m["family"] for m in made["members"]) if made else "",
        # The job's own choice between its best single model and the ensemble, made on the confirmation folds
        # without the test split.
        "recommended": bool(made and made.get("recommended")),
        "automl": float(made["test_score"] if made and made.get("recommended") else result["test_score"]),
        "confirmed": result.get("confirmed", 0),
        "automl_family": result["family"],
        "cv": float(result["cv_mean"]),
        "default_family": best_family,
        "default": defaults[best_family],
        "seconds": seconds_between(job, "created_at", "finished_at"),
        "queued": seconds_between(job, "created_at", "started_at"),
        "states": board["summary"]["states"],
        "trials": board["summary"]["trials"],
    }
    print(f"  {name}: {row}", flush=True)
    return row


def cancel_seconds(client: Client, dataset: str, metric: str) -> float:
    job = client.automl(dataset, metric=metric, budget=120, name=f"{dataset}-cancelled", wait=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        events = client._json("GET", f"/api/v1/jobs/{job.id}/logs")["events"]
        if any(e["kind"] == "trial" for e in events):
            break
        time.sleep(0.2)
    started = time.monotonic()
    state = job.cancel().state
    took = time.monotonic() - started
    print(f"  cancel of a searching AutoML job: {state} after {took:.2f} s", flush=True)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ensemble", type=int, default=3, help="the AutoML jobs' top-k ensemble (0: off)")
    parser.add_argument("--datasets", default=",".join(n for n, _ in DATASETS), help="a comma-separated subset")
    parser.add_argument("--write", action="store_true", help="record the table in docs/training.md")
    parser.add_argument(
        "--section", default="", help="record a subset's run as a section of its own (automl-NAME), the main one kept"
    )
    args = parser.parse_args()
    chosen = [(n, m) for n, m in DATASETS if n in args.datasets.split(",")]
    load_before = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = {"STRATUS_JOB_THREADS": str(args.threads), "STRATUS_JOB_SLOTS": "1", "STRATUS_SAMPLES": "false"}
        process, url = start_server(home, Path(tmp) / "cache", args.threads, env_extra=env)
        try:
            with Client(url, api_key=(home / "admin.key").read_text().strip(), timeout=600) as client:
                for name, _ in chosen:
                    if name == "friedman1":
                        client.upload_dataset(name, friedman_csv(), target="target", format="csv")
                    else:
                        client.upload_dataset(name, builtin=name)
                for name, metric in chosen:
                    rows.append(run_dataset(client, name, metric, args.budget, args.ensemble))
                cancel_s = cancel_seconds(client, chosen[0][0], chosen[0][1])
        finally:
            process.terminate()
            process.wait(timeout=30)
    load_after = os.getloadavg()[0]
    lines = [
        "| dataset | metric | AutoML test score | best single: family (CV mean), test | ensemble: members, test | "
        "best default family | its test score | AutoML >= default | job time, s (budget + 10) | "
        "trials: complete / pruned / failed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['dataset']} | {r['metric']} | {r['error']} | | | {r['default_family']} | {r['default']:.4f} | "
                "no | | |"
            )
            continue
        s = r["states"]
        made = f"{r['members']}, {r['ensemble']:.4f}" if r["ensemble"] is not None else "none"
        made += " (chosen)" if r["recommended"] else ""
        lines.append(
            f"| {r['dataset']} | {r['metric']} | {r['automl']:.4f} | {r['automl_family']} ({r['cv']:.4f}), "
            f"{r['single']:.4f} | {made} | "
            f"{r['default_family']} | {r['default']:.4f} | {'yes' if r['automl'] >= r['default'] else 'no'} | "
            f"{r['seconds']:.1f} ({'within' if r['seconds'] <= args.budget + 10 else 'OVER'}) | "
            f"{s['complete']} / {s['pruned']} / {s['failed']} |"
        )
    print("\n".join(lines))
    if args.write:
        block = "\n".join(
            [
                BEGIN,
                f"Measured by `make bench-automl` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {machine()}; "
                f"{args.threads} threads per job, one job at a time, budget {args.budget:g} s, top-{args.ensemble} "
                "ensemble (the AutoML test score is the ensemble's when the job chose it on its confirmation folds, "
                "marked chosen). Load average "
                f"{load_before:.1f} at the start and {load_after:.1f} at the end (the machine is shared: other "
                "sessions' tests ran beside it, so the search had less than its 2 cores).",
                "",
                *lines,
                "",
                f"Cancel of an AutoML job while it searched ({chosen[0][0]}): {cancel_s:.2f} s from the call to its "
                "answer, "
                "the job then cancelled.",
                END,
            ]
        )
        begin, end = (
            (BEGIN, END)
            if not args.section
            else (f"<!-- automl-{args.section}:start -->", f"<!-- automl-{args.section}:end -->")
        )
        block = block.replace(BEGIN, begin).replace(END, end)
        heading = "## AutoML: measured" if not args.section else f"### AutoML: measured again ({args.section})"
        write_section(begin, end, block, heading=heading, doc=DOC)


if __name__ == "__main__":
    main()
