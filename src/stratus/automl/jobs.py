"""AutoML as a kind of job: check and queue a request, feed the child its dataset, register the refit best
model through the training job kind's own registration, and the top-k ensemble as a pipeline."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from stratus.automl.params import LEADERBOARD_FILE, LOWER_IS_BETTER, check_fits, parse_request
from stratus.errors import NotFound
from stratus.jobs import JobService
from stratus.registry import RegistryService, check_name
from stratus.training.jobs import TrainingJobs
from stratus.training.service import DatasetService
from stratus.version import __version__

#: The job's process is killed this long after its budget if it has not ended by itself (it plans to end
#: a second before the budget): the budget is a hard limit, this only covers the process's own teardown.
BACKSTOP_S = 2


class AutoMLJobs:
    """The ``automl`` job kind (the child is automl/worker.py)."""

    module = "stratus.automl.worker"

    def __init__(
        self,
        registry: RegistryService,
        datasets: DatasetService,
        jobs: JobService,
        training: TrainingJobs,
        *,
        max_budget_s: float,
        trial_memory_mb: int,
    ) -> None:
        self.registry = registry
        self.datasets = datasets
        self.jobs = jobs
        self.training = training
        self.max_budget_s = max_budget_s
        self.trial_memory_mb = trial_memory_mb
        jobs.kinds["automl"] = self

    def submit(self, raw: dict[str, Any]) -> dict[str, Any]:
        request = parse_request(raw, max_budget_s=self.max_budget_s)
        dataset = self.datasets.get(request.dataset)
        families = check_fits(request, dataset)
        name = request.name or f"{request.dataset}-automl"[:64]
        check_name(name)
        spec = {
            "request": request.model_dump(),
            "dataset": dataset["name"],
            "dataset_digest": dataset["digest"],
            "families": families,
            "trial_memory_mb": request.trial_memory_mb or self.trial_memory_mb,
        }
        timeout_s = math.ceil(request.budget) + BACKSTOP_S
        return self.jobs.create("automl", spec, name, retries=0, timeout_s=timeout_s)

    # -- job kind ---------------------------------------------------------------------------------

    def inputs(self, spec: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        dataset, data = self.datasets.source(spec["dataset"])
        request = {
            "request": spec["request"],
            "dataset": dataset,
            "families": spec["families"],
            "trial_memory_mb": spec["trial_memory_mb"],
            # The budget runs from now, when the runner starts the child.
            "started_at": time.time(),
        }
        return request, data

    def register(self, job_id: str, spec: dict[str, Any], job_dir: Path) -> tuple[dict[str, Any], int | None]:
        result = json.loads((job_dir / "automl.json").read_text())
        leaderboard = (job_dir / LEADERBOARD_FILE).read_bytes()
        summary = {
            "metric": result["metric"],
            "test_score": result["test_score"],
            "cv_mean": result["cv_mean"],
            "cv_std": result["cv_std"],
            # The chosen configuration's mean on the confirmation folds (None when none was confirmed in time).
            "confirm_mean": result.get("confirm_mean"),
            "confirmed": result.get("confirmed", 0),
            "family": result["family"],
            "trial": result["trial"],
            "trials": result["trials"],
            "job_id": job_id,
        }
        refit_dir = job_dir / "refit"
        refit = json.loads((refit_dir / "result.json").read_text())
        refit["metrics"]["automl"] = summary
        (refit_dir / "result.json").write_text(json.dumps(refit))
        train_spec = {
            "request": result["request"],
            "model_name": spec["model_name"],
            "dataset": spec["dataset"],
            "dataset_digest": spec["dataset_digest"],
        }
        _, version = self.training.register(job_id, train_spec, refit_dir, attachments={LEADERBOARD_FILE: leaderboard})
        metrics: dict[str, Any] = dict(summary)
        if result.get("ensemble"):
            metrics["ensemble"] = self._register_ensemble(job_id, spec, job_dir, result, refit["task"], leaderboard)
        return metrics, version

    def _register_ensemble(
        self, job_id: str, spec: dict[str, Any], job_dir: Path, result: dict[str, Any], task: str, leaderboard: bytes
    ) -> dict[str, Any]:
        built = result["ensemble"]
        folder = job_dir / "ensemble"
        version = self.registry.register_pipeline(
            spec["model_name"],
            (folder / "pipeline.json").read_bytes(),
            {name: (folder / name).read_bytes() for name in built["files"]},
            attachments={LEADERBOARD_FILE: leaderboard},
            metrics={result["metric"]: built["test_score"], "automl": {"metric": result["metric"], "job_id": job_id}},
            params={
                "trainer": "automl-ensemble",
                "combine": built["combine"],
                "members": built["members"],
                "job_id": job_id,
                "stratus_version": __version__,
            },
            dataset=f"{spec['dataset']}@{spec['dataset_digest']}",
            source="automl:ensemble",
            task=task,
            description=f"top-{len(built['members'])} ensemble of AutoML job {job_id}",
        )
        return {
            "version": version.version,
            "test_score": built["test_score"],
            "combine": built["combine"],
            "members": built["members"],
            # Whether it beat its best member on the confirmation folds (the job's choice, made before the test).
            "confirm": built.get("confirm"),
            "recommended": bool(built.get("recommended")),
        }

    # -- leaderboard ------------------------------------------------------------------------------

    def leaderboard(self, job_id: str) -> dict[str, Any]:
        """The job's trials best first, from its events: complete as the search goes, final when it ends."""
        job = self.jobs.get(job_id)
        if job["kind"] != "automl":
            raise NotFound(f"job {job_id!r} is not an AutoML job")
        metric = job["spec"]["request"]["metric"]
        by_trial: dict[int, dict[str, Any]] = {}
        summary: dict[str, Any] = {}
        for event in self.jobs.events(job_id):
            if event["kind"] == "trial":  # a confirmed trial is reported again, with its confirmation: the last wins
                by_trial[int(event["data"]["trial"])] = {k: v for k, v in event["data"].items() if k != "pid"}
            elif event["kind"] == "leaderboard":
                summary = {k: v for k, v in event["data"].items() if k != "best"}
        sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
        order = {"complete": 0, "pruned": 1, "failed": 2}

        def key(row: dict[str, Any]) -> tuple[int, float, int]:
            mean = row.get("cv_mean")
            return order.get(row["state"], 3), sign * mean if mean is not None else math.inf, int(row["trial"])

        rows = sorted(by_trial.values(), key=key)
        complete = [r["cv_mean"] for r in rows if r["state"] == "complete"]
        return {
            "job": job_id,
            "state": job["state"],
            "metric": metric,
            "budget_s": job["spec"]["request"]["budget"],
            "families": job["spec"]["families"],
            "summary": summary,
            "result": job["metrics"],
            "version": job["version"],
            "best_cv": (min(complete) if sign > 0 else max(complete)) if complete else None,
            "rows": rows,
        }
