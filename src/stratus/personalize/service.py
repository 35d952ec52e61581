"""Personalization as a kind of job: the bundled MiniLM fine-tuned on one project's own pairs or labelled texts,
registered as a new model of that project only (the registry scopes every model to its project, so every other
project gets 404 for it on every route), served like `minilm` (V2, V1 and the OpenAI embeddings route) under
its own name. The base `minilm` is never changed: the child starts from the package's weights, and the result
must have another name. The child is personalize/worker.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stratus.errors import InvalidInput
from stratus.jobs import JobService
from stratus.personalize.data import read
from stratus.personalize.request import BASES, PIPELINE_FILES, REPORT_FILE, parse_request
from stratus.registry import RegistryService, check_name
from stratus.training.service import DatasetService
from stratus.version import __version__


class PersonalizeJobs:
    """The ``personalize`` job kind: check the dataset now (a 400 for one with no usable pairs or labels), feed
    the child its rows, register the personalized model in the submitting project."""

    module = "stratus.personalize.worker"

    def __init__(self, registry: RegistryService, datasets: DatasetService, jobs: JobService) -> None:
        self.registry = registry
        self.datasets = datasets
        self.jobs = jobs
        jobs.kinds["personalize"] = self

    def submit(self, raw: Any) -> dict[str, Any]:
        request = parse_request(raw)
        name = request.name or f"{request.base}-{request.dataset}"[:64]
        check_name(name)
        if name in BASES:
            raise InvalidInput(
                f"the personalized model needs a name of its own: {name!r} is the base model, which stays as it is"
            )
        record, data = self.datasets.source(request.dataset)  # 404 for a dataset of another project
        if record["format"] != "csv":
            raise InvalidInput(f"dataset {request.dataset!r} is {record['format']}; personalization reads a CSV")
        params = request.params
        examples = read(data, request.dataset, mode=params.mode, held_out=params.held_out, seed=params.seed)
        spec = {
            "request": request.model_dump(),
            "dataset": record["name"],
            "dataset_digest": record["digest"],
            "examples": examples.summary(),
        }
        return self.jobs.create("personalize", spec, name, retries=0, timeout_s=request.timeout_s)

    def inputs(self, spec: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        record, data = self.datasets.source(spec["dataset"])
        if record["digest"] != spec["dataset_digest"]:  # deleted and uploaded again since the submit
            raise InvalidInput(f"dataset {spec['dataset']!r} changed since the job was submitted")
        return {"request": spec["request"], "dataset": record}, data

    def register(self, job_id: str, spec: dict[str, Any], job_dir: Path) -> tuple[dict[str, Any], int | None]:
        report = json.loads((job_dir / REPORT_FILE).read_text())
        request = spec["request"]
        version = self.registry.register_pipeline(
            spec["model_name"],
            (job_dir / "pipeline.json").read_bytes(),
            {f: (job_dir / f).read_bytes() for f in PIPELINE_FILES},
            attachments={REPORT_FILE: (job_dir / REPORT_FILE).read_bytes()},
            metrics=report,
            params={
                **request["params"],
                "base": request["base"],
                "trainer": "personalize",
                "job_id": job_id,
                "stratus_version": __version__,
            },
            dataset=f"{spec['dataset']}@{spec['dataset_digest']}",
            source=f"personalize:{request['base']}",
            task="embedding",
            tags={"openai": "embeddings", "personalized": "true", "base": request["base"]},
            model_description=f"{request['base']} personalized on dataset {spec['dataset']}: text in (BYTES), "
            "embedding and token_count out; also served by /openai/v1/embeddings",
            description=f"personalized by job {job_id}",
        )
        return report, version.version


__all__ = ["PersonalizeJobs"]
