"""Compression as a service: a request becomes one job whose child produces and measures every variant;
the server then registers the variants as new versions with lineage, all or none, and may move an alias
to the recommended one."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from stratus import __version__
from stratus.compress.methods import check_applicable, data_source, kind_of, parse_request
from stratus.errors import InvalidInput, NotFound, StratusError
from stratus.framing import pack
from stratus.jobs import JobService
from stratus.registry import RegistryService, VersionInfo, check_alias, parse_version_ref
from stratus.runtime.pipeline import OnnxStep, PipelineSpec
from stratus.training.service import DatasetService

REPORT_JSON = "compression-report.json"
REPORT_PNG = "compression-report.png"
#: Parameters a variant inherits from its parent, so it can be evaluated (and compressed) the same way.
DATA_PARAMS = ("input_scale", "test_split", "seed")


class CompressionService:
    module = "stratus.compress.worker"

    def __init__(self, registry: RegistryService, datasets: DatasetService, jobs: JobService) -> None:
        self.registry = registry
        self.datasets = datasets
        self.jobs = jobs
        jobs.kinds["compress"] = self

    # -- submit -----------------------------------------------------------------------------------

    def submit(self, name: str, ref: str, raw: Any) -> dict[str, Any]:
        """Check everything that can be checked now, then queue the job."""
        # The model is looked up first: another project's caller gets 404 whatever the body says.
        version = self.registry.resolve(name, parse_version_ref(ref))
        request, params = parse_request(raw)
        if request.promote_alias is not None:
            check_alias(request.promote_alias)
        for method in request.methods:
            check_applicable(version, method)
        kind = kind_of(version)
        inputs = version.signature.inputs
        if len(inputs) != 1:
            raise InvalidInput(
                f"compression evaluates models with one input tensor; version {version.version} of {name!r} has "
                f"{len(inputs)}"
            )
        data = self._data_spec(version)
        spec = {
            "model": name,
            "version": version.version,
            "format": version.format,
            "kind": kind,
            "input": inputs[0].name,
            "output": _output_of(version, kind),
            "methods": request.methods,
            "params": params,
            "budget": request.accuracy_budget,
            "threads": request.threads,
            "timing_seconds": request.timing_seconds,
            "promote_alias": request.promote_alias,
            "data": data,
        }
        if version.format == "pipeline":
            spec["onnx_files"] = self._onnx_files(version)
        return self.jobs.create("compress", spec, name, retries=0, timeout_s=request.timeout_s)

    def _data_spec(self, version: VersionInfo) -> dict[str, Any]:
        source = data_source(version)
        data: dict[str, Any] = {"source": source}
        data.update({k: version.params[k] for k in DATA_PARAMS if k in version.params})
        if source == "builtin":
            data["builtin"] = (version.dataset or "").split(":", 1)[1]
        elif source == "dataset":
            dataset_name, _, digest = (version.dataset or "").partition("@")
            try:
                record = self.datasets.get(dataset_name)
            except NotFound:
                raise InvalidInput(
                    f"the version was trained on dataset {dataset_name!r}, which no longer exists"
                ) from None
            if record["digest"] != digest:
                raise InvalidInput(f"dataset {dataset_name!r} is not the one the version was trained on")
            if any(f["kind"] in ("categorical", "text") for f in record["schema"].get("features", [])):
                raise InvalidInput("compression evaluates numeric and image datasets; this one has other columns")
            data["dataset"] = dataset_name
        return data

    def _onnx_files(self, version: VersionInfo) -> list[str]:
        spec = PipelineSpec.parse(self.registry.read_artifact(version))
        files = [step.file for step in spec.steps if isinstance(step, OnnxStep) and step.file is not None]
        if not files:
            raise InvalidInput("the pipeline has no ONNX model of its own to compress")
        return files

    # -- job kind ---------------------------------------------------------------------------------

    def inputs(self, spec: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        version = self.registry.get_version(spec["model"], spec["version"])
        entries = {"artifact": self.registry.read_artifact(version)}
        for file_name in version.files:
            entries[f"file:{file_name}"] = self.registry.read_file(version, file_name)
        request = {k: v for k, v in spec.items() if k != "key_id"}
        data = dict(spec["data"])
        if data["source"] == "dataset":
            data["record"], entries["dataset"] = self.datasets.source(data["dataset"])
        request["data"] = data
        return request, pack(entries)

    def register(self, job_id: str, spec: dict[str, Any], job_dir: Path) -> tuple[dict[str, Any], int | None]:
        """Register every variant, or none: a failure part-way deletes the versions already made."""
        result = json.loads((job_dir / "result.json").read_text())
        report = result["report"]
        parent = self.registry.get_version(spec["model"], spec["version"])
        attachments = {
            REPORT_JSON: json.dumps(report, indent=1).encode(),
            REPORT_PNG: (job_dir / "report.png").read_bytes(),
        }
        made: list[int] = []
        try:
            for entry, row in zip(result["variants"], report["variants"], strict=True):
                version = self._register_variant(job_id, parent, entry, row, attachments, job_dir)
                made.append(version.version)
                row["version"] = version.version
        except BaseException:
            for number in made:
                with contextlib.suppress(StratusError):
                    self.registry.delete_version(spec["model"], number)
            raise
        report["parent"]["version"] = parent.version
        recommended = None
        if report["recommendation"] is not None:
            best = next(r for r in report["variants"] if r["method"] == report["recommendation"]["method"])
            recommended = best["version"]
            report["recommendation"]["version"] = recommended
            if spec.get("promote_alias"):
                self.registry.set_alias(spec["model"], spec["promote_alias"], recommended)
                report["recommendation"]["promoted"] = spec["promote_alias"]
        report["versions"] = made
        return report, recommended

    def _register_variant(
        self,
        job_id: str,
        parent: VersionInfo,
        entry: dict[str, Any],
        row: dict[str, Any],
        attachments: dict[str, bytes],
        job_dir: Path,
    ) -> VersionInfo:
        method = entry["method"]
        artifact = (job_dir / entry["artifact"]).read_bytes()
        files = {name: (job_dir / local).read_bytes() for name, local in entry["files"].items()}
        metrics = {
            **row["quality"],
            "quality_drop": row["quality_drop"],
            "size_bytes": row["size_bytes"],
            "p50_ms_batch1": row["p50_ms_batch1"],
            "throughput_batch32": row["throughput_batch32"],
            "speedup": row["speedup"],
        }
        params = {
            **{k: parent.params[k] for k in DATA_PARAMS if k in parent.params},
            "compression_method": method,
            "compression_params": row["params"],
            "compression_recipe": row["recipe"],
            "job_id": job_id,
            "stratus_version": __version__,
        }
        meta: dict[str, Any] = {
            "metrics": metrics,
            "params": params,
            "parent_version": parent.version,
            "dataset": parent.dataset,
            "source": f"compress:{method}",
            "config": parent.config,
            "create_model": False,
            "description": f"{method} of version {parent.version}, by job {job_id}",
        }
        if entry["format"] == "pipeline":
            return self.registry.register_pipeline(parent.model, artifact, files, attachments=attachments, **meta)
        return self.registry.register_onnx(parent.model, artifact, files={**files, **attachments}, **meta)


def _output_of(version: VersionInfo, kind: str) -> str:
    names = [t.name for t in version.signature.outputs]
    if kind == "embedding":
        return "embedding"
    if kind == "classifier":
        return "label"
    return names[0]


__all__ = ["REPORT_JSON", "REPORT_PNG", "CompressionService"]
