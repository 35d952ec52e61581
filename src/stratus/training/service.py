"""Datasets as a service: validated on upload, stored content-addressed and immutable."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from stratus.errors import Conflict, InvalidInput, NotFound
from stratus.registry import RegistryService, check_name
from stratus.registry.records import VersionInfo
from stratus.store.tables import Dataset
from stratus.training.datasets import (
    BUILTINS,
    ParsedDataset,
    builtin_npz_in_child,
    model_inputs,
    parse,
    profile_of,
    reference_of,
    schema_of,
)
from stratus.training.drift_reference import Reference, layout_for, sample_rows
from stratus.types import Array


def dataset_dict(row: Dataset) -> dict[str, Any]:
    return {
        "name": row.name,
        "format": row.format,
        "digest": row.digest,
        "size_bytes": row.size_bytes,
        "target": row.target,
        "task": row.task,
        "rows": row.rows,
        "schema": row.schema,
        "profile": row.profile,
        "options": row.options,
        "created_at": row.created_at.isoformat() + "Z",
    }


def sniff_format(data: bytes, filename: str | None) -> str:
    if data[:4] == b"PK\x03\x04":
        # NPZ files are ZIPs of .npy members; image datasets are ZIPs of folders.
        import io
        import zipfile

        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            raise InvalidInput("the upload is not a valid ZIP archive") from None
        return "npz" if names and all(n.endswith(".npy") for n in names) else "images"
    if filename and filename.lower().endswith(".npz"):
        return "npz"
    return "csv"


class DatasetService:
    def __init__(self, registry: RegistryService) -> None:
        self.registry = registry
        self.db = registry.db
        self.artifacts = registry.artifacts

    def upload(
        self,
        name: str,
        data: bytes,
        *,
        filename: str | None = None,
        format: str | None = None,
        target: str | None = None,
        missing: str = "error",
        task: str | None = None,
    ) -> dict[str, Any]:
        """Parse and check everything first; store only a dataset that training can use."""
        check_name(name, "dataset name")
        fmt = format or sniff_format(data, filename)
        parsed = parse(fmt, data, target=target, missing=missing, task=task)
        return self._store(name, fmt, data, parsed, {"missing": missing, "task": task}, target)

    def register_builtin(self, name: str, builtin: str | None = None) -> dict[str, Any]:
        source = builtin or name
        if source not in BUILTINS:
            raise InvalidInput(f"unknown built-in dataset {source!r}; choose one of {', '.join(BUILTINS)}")
        data = builtin_npz_in_child(source)
        parsed = parse("npz", data, task="regression" if source == "diabetes" else None)
        return self._store(name, "npz", data, parsed, {"builtin": source, "missing": "error"}, None)

    def _store(
        self, name: str, fmt: str, data: bytes, parsed: ParsedDataset, options: dict[str, Any], target: str | None
    ) -> dict[str, Any]:
        project_id = self.registry.projects.current_id()
        with self.db.exclusive():
            stored = self.artifacts.put_bytes(data)
            try:
                with self.db.write() as s:
                    if s.scalar(select(Dataset.id).where(Dataset.project_id == project_id, Dataset.name == name)):
                        raise Conflict(f"dataset {name!r} already exists; datasets are immutable")
                    row = Dataset(
                        project_id=project_id,
                        name=name,
                        format=fmt,
                        digest=stored.digest,
                        size_bytes=stored.size,
                        target=target,
                        task=parsed.task,
                        rows=parsed.rows,
                        schema=schema_of(parsed),
                        profile=profile_of(parsed),
                        options={k: v for k, v in options.items() if v is not None},
                    )
                    s.add(row)
            except sa_exc.IntegrityError:
                self.registry._drop_unreferenced({stored.digest})
                raise Conflict(f"dataset {name!r} already exists; datasets are immutable") from None
            except BaseException:
                self.registry._drop_unreferenced({stored.digest})
                raise
        return self.get(name)

    def _row(self, name: str) -> Dataset:
        check_name(name, "dataset name")
        with self.db.read() as s:
            row = s.scalar(
                select(Dataset).where(Dataset.project_id == self.registry.projects.current_id(), Dataset.name == name)
            )
        if row is None:
            raise NotFound(f"dataset {name!r} does not exist")
        return row

    def get(self, name: str) -> dict[str, Any]:
        return dataset_dict(self._row(name))

    def list_datasets(self) -> list[dict[str, Any]]:
        with self.db.read() as s:
            rows = s.scalars(
                select(Dataset).where(Dataset.project_id == self.registry.projects.current_id()).order_by(Dataset.name)
            ).all()
        return [dataset_dict(r) for r in rows]

    def delete(self, name: str) -> None:
        row = self._row(name)
        with self.db.exclusive():
            with self.db.write() as s:
                s.delete(s.get(Dataset, row.id))
            self.registry._drop_unreferenced({row.digest})

    def lineage_reference(self, version: VersionInfo) -> Reference | None:
        """The drift reference of a version trained before references were kept: every row of its lineage
        dataset (the training split is not known without the trainer's splitter, which the server does not
        load), and its outputs on the test split from evaluation.json. None when it has no such lineage."""
        if not version.dataset or "@" not in version.dataset:
            return None
        name, _, digest = version.dataset.partition("@")
        with self.db.read() as s:
            row = s.scalar(
                select(Dataset).where(
                    Dataset.project_id == self.registry.projects.current_id(), Dataset.digest == digest
                )
            )
        if row is None:  # deleted since: nothing to build from
            return None
        options = row.options or {}
        parsed = parse(
            row.format,
            self.artifacts.read(row.digest),
            target=row.target,
            missing=options.get("missing", "error"),
            task=options.get("task") or ("regression" if options.get("builtin") == "diabetes" else None),
        )
        signature = version.signature
        layout = layout_for(row.schema, [t.name for t in signature.inputs], [t.name for t in signature.outputs])
        outputs = None
        if "evaluation.json" in version.files:
            evaluation = json.loads(self.registry.read_file(version, "evaluation.json"))
            outputs = np.asarray(evaluation.get("test_predictions", []))
        return reference_of(parsed, layout, source=f"dataset {name} (all rows)", outputs=outputs)

    def uploaded_reference(
        self,
        version: VersionInfo,
        data: bytes,
        *,
        filename: str | None = None,
        format: str | None = None,
        target: str | None = None,
    ) -> tuple[Reference, dict[str, Array]]:
        """A reference dataset uploaded for a version (one registered from outside): parsed and checked like
        a training dataset, then sampled. Also returns the sample as the model's input tensors, so the
        caller can run the model on it for the evaluation-time outputs."""
        fmt = format or sniff_format(data, filename)
        parsed = parse(fmt, data, target=target)
        signature = version.signature
        layout = layout_for(schema_of(parsed), [t.name for t in signature.inputs], [t.name for t in signature.outputs])
        reference = reference_of(parsed, layout, source=f"uploaded ({fmt}, {parsed.rows} rows)")
        # The rows reference_of sampled (the same seeded draw), as the model's input tensors.
        return reference, model_inputs(parsed, layout, sample_rows(parsed.rows))

    def source(self, name: str) -> tuple[dict[str, Any], bytes]:
        """The dataset's record and its bytes, decrypted in memory and verified, for a training child."""
        row = self._row(name)
        return dataset_dict(row), self.artifacts.read(row.digest)
