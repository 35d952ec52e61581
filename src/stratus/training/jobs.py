"""Training as a kind of job: the service's side of a training run (the child is training/worker.py)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from stratus import framing
from stratus.jobs import JobService
from stratus.registry import RegistryService, check_name
from stratus.training.drift_reference import REFERENCE_FILE
from stratus.training.params import (
    DEFAULT_SEQUENCE_MAX_LENGTH,
    GRAPH_FILE,
    WEIGHTS_FILE,
    check_applicable,
    parse_train_request,
)
from stratus.training.service import DatasetService
from stratus.version import __version__


class TrainingJobs:
    """The ``train`` job kind: check and queue a training request, feed the child its dataset, register
    what it trained. It registers itself with the job service, as compression does."""

    module = "stratus.training.worker"
    #: settings.sequence_max_length (the platform sets it): the longest numeric sequence rnn/transformer accept.
    sequence_max_length = DEFAULT_SEQUENCE_MAX_LENGTH

    def __init__(self, registry: RegistryService, datasets: DatasetService, jobs: JobService) -> None:
        self.registry = registry
        self.datasets = datasets
        self.jobs = jobs
        jobs.kinds["train"] = self

    def submit(self, raw: dict[str, Any]) -> dict[str, Any]:
        request = parse_train_request(raw)
        dataset = self.datasets.get(request.dataset)
        check_applicable(request, dataset, self.sequence_max_length)
        name = request.name or f"{request.dataset}-{request.model}".replace("_", "-")[:64]
        check_name(name)
        spec: dict[str, Any] = {
            "request": request.model_dump(),
            "dataset": dataset["name"],
            "dataset_digest": dataset["digest"],
        }
        if request.workers is not None:
            need = {
                "workers": request.workers,
                "cpus_per_worker": request.cpus_per_worker,
                "memory_mb_per_worker": request.memory_mb_per_worker,
            }
            self.jobs.check_placeable(need)  # a clear 4xx now, not a job that waits forever
            spec["resources"] = need
        return self.jobs.create("train", spec, name, retries=request.retries, timeout_s=request.timeout_s)

    def inputs(self, spec: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        dataset, dataset_bytes = self.datasets.source(spec["dataset"])
        request = {"request": spec["request"], "dataset": dataset}
        if spec["request"].get("workers") is None:
            return request, dataset_bytes
        # A data-parallel job gets the checkpoint its earlier attempt left in the artifact store (read and verified
        # like any blob), to resume from instead of epoch 1.
        bundle = {"dataset": dataset_bytes}
        found = self.jobs.last_checkpoint(spec["job_id"])
        if found is not None:
            bundle["checkpoint"] = found[1]
        return {**request, "framed": True, "job_id": spec["job_id"]}, framing.pack(bundle)

    def register(
        self, job_id: str, spec: dict[str, Any], job_dir: Path, *, attachments: dict[str, bytes] | None = None
    ) -> tuple[dict[str, Any], int | None]:
        """``attachments``: further files to keep with the version (an AutoML job's leaderboard)."""
        result = json.loads((job_dir / "result.json").read_text())
        request = spec["request"]
        files = {**(attachments or {}), "evaluation.json": (job_dir / "evaluation.json").read_bytes()}
        for optional in ("confusion_matrix.png", GRAPH_FILE, WEIGHTS_FILE, REFERENCE_FILE):
            if (job_dir / optional).exists():
                files[optional] = (job_dir / optional).read_bytes()
        name = spec["model_name"]
        if result.get("format") == "pipeline":
            register = partial(
                self.registry.register_pipeline,
                name,
                (job_dir / "pipeline.json").read_bytes(),
                {f: (job_dir / f).read_bytes() for f in result["files"]},
                attachments=files,
            )
        else:
            register = partial(self.registry.register_onnx, name, (job_dir / "model.onnx").read_bytes(), files=files)
        version = register(
            metrics=result["metrics"],
            params={**request["params"], "trainer": request["model"], "job_id": job_id, "stratus_version": __version__},
            dataset=f"{spec['dataset']}@{spec['dataset_digest']}",
            source=result["source"],
            task=result["task"],
            description=f"trained by job {job_id}",
        )
        return result["metrics"], version.version
