"""The model registry: models, immutable versions, aliases, lineage, health.

Every change goes through the store's single writer. Listeners registered with ``on_change`` hear the
name of each model that changed, which is how the serving path keeps its caches fresh without polling.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Unpack

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from stratus import tenancy
from stratus.errors import Conflict, Forbidden, InvalidInput, NotFound, StratusError
from stratus.formats import inspect_onnx
from stratus.registry.blobs import BlobAccess
from stratus.registry.names import check_alias, check_name, check_task, parse_version_ref
from stratus.registry.records import ModelInfo, VersionInfo, VersionMeta
from stratus.runtime.config import ServingConfig
from stratus.store import Artifacts, Database
from stratus.store.tables import Alias, Model, ModelVersion, VersionFile
from stratus.tenancy.projects import Projects
from stratus.types import Signature

log = logging.getLogger(__name__)

DEFAULT_PROJECT = tenancy.DEFAULT_PROJECT
DEFAULT_ALIAS = "production"
_INSERT_ATTEMPTS = 5
ChangeListener = Callable[[str], None]


class RegistryService(BlobAccess):
    def __init__(self, db: Database, artifacts: Artifacts) -> None:
        super().__init__(db, artifacts)
        self._listeners: list[ChangeListener] = []
        #: The caller's project id (stratus.tenancy); the other services scope their queries through it too.
        self.projects = Projects(db)

    # -- plumbing -------------------------------------------------------------------------------

    def on_change(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def _changed(self, model: str) -> None:
        for listener in self._listeners:
            listener(model)

    def _model_row(self, s: Session, name: str) -> Model:
        check_name(name)
        row = s.scalar(
            select(Model)
            .where(Model.project_id == self.projects.current_id(), Model.name == name)
            .options(selectinload(Model.versions).selectinload(ModelVersion.files), selectinload(Model.aliases))
        )
        if row is None:
            raise NotFound(f"model {name!r} does not exist")
        return row

    @staticmethod
    def _version_row(model: Model, version: int) -> ModelVersion:
        for row in model.versions:
            if row.version == version:
                return row
        raise NotFound(f"model {model.name!r} has no version {version}")

    @staticmethod
    def _aliases_of(model: Model, version_id: int) -> tuple[str, ...]:
        return tuple(a.name for a in model.aliases if a.version_id == version_id)

    def _info(self, model: Model, row: ModelVersion) -> VersionInfo:
        return VersionInfo.from_row(row, model.name, self._aliases_of(model, row.id))

    # -- models ---------------------------------------------------------------------------------

    def create_model(
        self, name: str, *, description: str = "", task: str = "other", tags: dict[str, Any] | None = None
    ) -> ModelInfo:
        check_name(name)
        check_task(task)
        project_id = self.projects.current_id()
        try:
            with self.db.write() as s:
                exists = s.scalar(select(Model.id).where(Model.project_id == project_id, Model.name == name))
                if exists is not None:
                    raise Conflict(f"model {name!r} already exists")
                s.add(Model(project_id=project_id, name=name, description=description, task=task, tags=tags or {}))
        except sa_exc.IntegrityError:
            raise Conflict(f"model {name!r} already exists") from None
        self._changed(name)
        return self.get_model(name)

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        task: str | None = None,
        tags: dict[str, Any] | None = None,
        allow_download: bool | None = None,
    ) -> ModelInfo:
        with self.db.write() as s:
            row = self._model_row(s, name)
            if allow_download is not None:
                row.allow_download = allow_download
            if description is not None:
                row.description = description
            if task is not None:
                row.task = check_task(task)
            if tags is not None:
                row.tags = tags
        self._changed(name)
        return self.get_model(name)

    def check_download(self, name: str) -> None:
        """Downloading a model's bytes hands over its IP; its owner can switch that off."""
        if not self.get_model(name).allow_download:
            raise Forbidden(f"downloading model {name!r} is disabled (allow_download is false)")

    def get_model(self, name: str) -> ModelInfo:
        with self.db.read() as s:
            return ModelInfo.from_row(self._model_row(s, name))

    def list_models(self) -> list[ModelInfo]:
        with self.db.read() as s:
            rows = s.scalars(
                select(Model)
                .where(Model.project_id == self.projects.current_id())
                .order_by(Model.name)
                .options(selectinload(Model.versions).selectinload(ModelVersion.files), selectinload(Model.aliases))
            ).all()
            return [ModelInfo.from_row(r) for r in rows]

    def page_models(self, offset: int = 0, limit: int = 50, search: str = "") -> tuple[list[ModelInfo], int]:
        """One page of the caller's models by name (``search``: part of the name), and how many match: what a
        list that pages shows. Only the page's version numbers and aliases are read, not the versions' rows
        (their metrics and files), which ``list_models`` loads for every model."""
        project_id = self.projects.current_id()
        where = [Model.project_id == project_id]
        if search:
            where.append(Model.name.contains(search, autoescape=True))
        with self.db.read() as s:
            total = s.scalar(select(func.count(Model.id)).where(*where)) or 0
            rows = s.scalars(select(Model).where(*where).order_by(Model.name).offset(max(0, offset)).limit(limit)).all()
            ids = [r.id for r in rows]
            numbers: dict[int, dict[int, int]] = {i: {} for i in ids}
            for model_id, version_id, version in s.execute(
                select(ModelVersion.model_id, ModelVersion.id, ModelVersion.version)
                .where(ModelVersion.model_id.in_(ids))
                .order_by(ModelVersion.version)
            ):
                numbers[model_id][version_id] = version
            aliases: dict[int, dict[str, int]] = {i: {} for i in ids}
            for model_id, alias, version_id in s.execute(
                select(Alias.model_id, Alias.name, Alias.version_id).where(Alias.model_id.in_(ids)).order_by(Alias.name)
            ):
                if version_id in numbers[model_id]:
                    aliases[model_id][alias] = numbers[model_id][version_id]
            return [
                ModelInfo(
                    name=r.name,
                    description=r.description,
                    task=r.task,
                    tags=dict(r.tags),
                    created_at=r.created_at,
                    updated_at=r.updated_at,
                    versions=tuple(numbers[r.id].values()),
                    aliases=aliases[r.id],
                    allow_download=r.allow_download,
                )
                for r in rows
            ], total

    def versions_on_dataset(self, dataset: str, limit: int = 50) -> list[dict[str, Any]]:
        """The caller's newest versions whose lineage names ``dataset`` (``name@digest``): model, version, source
        and when, without the versions' metrics (a dataset may have trained thousands)."""
        with self.db.read() as s:
            rows = s.execute(
                select(Model.name, ModelVersion.version, ModelVersion.source, ModelVersion.created_at)
                .join(Model, Model.id == ModelVersion.model_id)
                .where(Model.project_id == self.projects.current_id(), ModelVersion.dataset == dataset)
                .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
                .limit(limit)
            ).all()
        return [{"model": m, "version": v, "source": src, "created_at": at} for m, v, src, at in rows]

    def delete_model(self, name: str) -> None:
        with self.db.exclusive():
            with self.db.write() as s:
                row = self._model_row(s, name)
                digests = {d for v in row.versions for d in (v.digest, *(f.digest for f in v.files))}
                s.delete(row)  # the ORM cascade removes aliases before the versions they point at
            self._drop_unreferenced(digests)
        self._changed(name)

    # -- versions -------------------------------------------------------------------------------

    def register_onnx(
        self,
        name: str,
        data: bytes,
        *,
        filename: str | None = None,
        files: dict[str, bytes] | None = None,
        **meta: Unpack[VersionMeta],
    ) -> VersionInfo:
        """Verify an ONNX model (unsafe formats refused, onnx checker, loaded in ONNX Runtime) and store
        it as a new immutable version. Nothing is written unless every check passes."""
        info = inspect_onnx(data, filename)
        meta.setdefault("source", f"upload:{info.producer or 'onnx'}")
        return self._store(name, data, "onnx", info.signature, files or {}, meta)

    def register_pipeline(
        self,
        name: str,
        spec_bytes: bytes,
        files: dict[str, bytes],
        *,
        attachments: dict[str, bytes] | None = None,
        **meta: Unpack[VersionMeta],
    ) -> VersionInfo:
        """Store a pipeline: its JSON spec plus the files it names. It is built and run once on warm-up
        inputs before anything is written, so a pipeline that cannot serve is never registered."""
        from stratus.runtime.pipeline import PipelineRunner, PipelineSpec

        spec = PipelineSpec.parse(spec_bytes)
        wanted = spec.files()
        if set(files) != wanted:
            missing, extra = sorted(wanted - set(files)), sorted(set(files) - wanted)
            raise InvalidInput(f"pipeline files do not match its spec: missing {missing}, unexpected {extra}")
        for file_name, content in files.items():
            if file_name.endswith(".onnx"):
                inspect_onnx(content, file_name)
        try:
            PipelineRunner(spec, files.__getitem__, self.read_ref, threads=1).warm_up()
        except StratusError:
            raise
        except Exception as exc:
            raise InvalidInput(f"the pipeline does not run: {exc}") from None
        meta.setdefault("source", "pipeline")
        clash = set(files) & set(attachments or {})
        if clash:
            raise InvalidInput(f"attachment names {sorted(clash)} are already pipeline files")
        return self._store(name, spec_bytes, "pipeline", spec.signature(), {**files, **(attachments or {})}, meta)

    def import_verified(
        self,
        name: str,
        data: bytes,
        fmt: str,
        signature: Signature,
        files: dict[str, bytes],
        **meta: Unpack[VersionMeta],
    ) -> VersionInfo:
        """Store a version whose checks already passed where it was made: the bundled samples, which their
        builder ran through inspect_onnx (and the pipeline end to end) and whose bytes the caller verified
        against the build's checksums. Repeating the gate would cost every new home seconds for nothing."""
        return self._store(name, data, fmt, signature, files, meta)

    def _store(
        self,
        name: str,
        data: bytes,
        fmt: str,
        signature: Signature,
        files: dict[str, bytes],
        meta: VersionMeta,
    ) -> VersionInfo:
        """Write the blobs and the row under the writer lock, so a failed insert never removes a blob
        that a concurrent registration relies on, and a crash leaves only blobs the next start drops."""
        check_name(name)
        version = meta.get("version")
        if version is not None and version < 1:
            raise InvalidInput(f"invalid version {version}: versions start at 1")
        config = ServingConfig.parse(meta.get("config")).model_dump(exclude_defaults=True)
        create_model = meta.get("create_model", True)
        task = check_task(meta.get("task") or "other")
        project_id = self.projects.current_id()
        with self.db.exclusive():
            stored = self.artifacts.put_bytes(data)
            stored_files = {file_name: self.artifacts.put_bytes(content) for file_name, content in files.items()}
            written = {stored.digest, *(f.digest for f in stored_files.values())}
            wanted = version
            # Another server on a shared DB may insert the same model or version number between this one's read
            # and its insert: the unique constraint refuses the second (IntegrityError), and a new attempt sees
            # the winner's row (a 409 for a version number asked for, the next number otherwise).
            for attempt in range(_INSERT_ATTEMPTS):
                version = wanted
                try:
                    with self.db.write() as s:
                        # The model's row lock orders this model's registrations across servers (SQLite has one
                        # writer anyway): the newest version number below is then final until this commits.
                        model = s.scalar(
                            select(Model).where(Model.project_id == project_id, Model.name == name).with_for_update()
                        )
                        if model is None:
                            if not create_model:
                                raise NotFound(f"model {name!r} does not exist")
                            model = Model(
                                project_id=project_id,
                                name=name,
                                description=meta.get("model_description", ""),
                                task=task,
                                tags=meta.get("tags") or {},
                            )
                            s.add(model)
                            s.flush()
                        newest = s.scalar(
                            select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
                        )
                        if version is None:
                            version = (newest or 0) + 1
                        elif s.scalar(
                            select(ModelVersion.id).where(
                                ModelVersion.model_id == model.id, ModelVersion.version == version
                            )
                        ):
                            raise Conflict(
                                f"version {version} of model {name!r} already exists; versions are immutable"
                            )
                        row = ModelVersion(
                            model_id=model.id,
                            version=version,
                            digest=stored.digest,
                            size_bytes=stored.size,
                            format=fmt,
                            signature=signature.to_dict(),
                            metrics=meta.get("metrics") or {},
                            params=meta.get("params") or {},
                            config=config,
                            parent_version=meta.get("parent_version"),
                            dataset=meta.get("dataset"),
                            source=meta.get("source"),
                            description=meta.get("description", ""),
                        )
                        row.files = [
                            VersionFile(
                                name=file_name, digest=f.digest, size_bytes=f.size, media_type=_media_type(file_name)
                            )
                            for file_name, f in stored_files.items()
                        ]
                        s.add(row)
                        s.flush()
                    break
                except sa_exc.IntegrityError:
                    if attempt + 1 < _INSERT_ATTEMPTS:
                        continue
                    self._drop_unreferenced(written)
                    raise Conflict(
                        f"version {version} of model {name!r} already exists; versions are immutable"
                    ) from None
                except BaseException:
                    self._drop_unreferenced(written)
                    raise
        assert version is not None
        self._changed(name)
        return self.get_version(name, version)

    def attach_file(self, name: str, version: int, file_name: str, content: bytes) -> VersionInfo:
        """Add (or replace) a derived file of an existing version: its drift reference. The model bytes stay
        immutable; the file is sealed and stored like the version's own, and dropped with it."""
        with self.db.exclusive():
            stored = self.artifacts.put_bytes(content)
            replaced: set[str] = set()
            try:
                with self.db.write() as s:
                    row = self._version_row(self._model_row(s, name), version)
                    for existing in [f for f in row.files if f.name == file_name]:
                        replaced.add(existing.digest)
                        row.files.remove(existing)
                    s.flush()
                    row.files.append(
                        VersionFile(
                            name=file_name,
                            digest=stored.digest,
                            size_bytes=stored.size,
                            media_type=_media_type(file_name),
                        )
                    )
            except BaseException:
                self._drop_unreferenced({stored.digest})
                raise
            self._drop_unreferenced(replaced - {stored.digest})
        self._changed(name)
        return self.get_version(name, version)

    def list_versions(self, name: str) -> list[VersionInfo]:
        with self.db.read() as s:
            model = self._model_row(s, name)
            return [self._info(model, v) for v in model.versions]

    def get_version(self, name: str, version: int) -> VersionInfo:
        with self.db.read() as s:
            model = self._model_row(s, name)
            return self._info(model, self._version_row(model, version))

    def resolve(self, name: str, ref: str | int | None = None) -> VersionInfo:
        """Turn a version reference into a version: a number, an alias, 'latest', or None.

        None means the ``production`` alias when it is set, else the newest active version.
        """
        parsed = parse_version_ref(ref)
        with self.db.read() as s:
            model = self._model_row(s, name)
            if isinstance(parsed, int):
                row = self._version_row(model, parsed)
            elif isinstance(parsed, str) and parsed != "latest":
                alias = next((a for a in model.aliases if a.name == parsed), None)
                if alias is None:
                    known = ", ".join(a.name for a in model.aliases) or "none"
                    raise NotFound(f"model {name!r} has no alias {parsed!r} (aliases: {known})")
                row = next(v for v in model.versions if v.id == alias.version_id)
            else:
                alias = next((a for a in model.aliases if a.name == DEFAULT_ALIAS), None) if parsed is None else None
                if alias is not None:
                    row = next(v for v in model.versions if v.id == alias.version_id)
                else:
                    active = [v for v in model.versions if v.status == "active"]
                    if not active:
                        raise NotFound(f"model {name!r} has no active version to serve")
                    row = max(active, key=lambda v: v.version)
            return self._info(model, row)

    def set_alias(self, name: str, alias: str, version: int) -> VersionInfo:
        """Point ``alias`` at ``version``. One UPDATE in one transaction: readers see old or new."""
        check_alias(alias)
        with self.db.write() as s:
            model = self._model_row(s, name)
            target = self._version_row(model, version)
            if target.status != "active":
                raise Conflict(f"version {version} of {name!r} is {target.status}; only active versions take aliases")
            row = next((a for a in model.aliases if a.name == alias), None)
            if row is None:
                s.add(Alias(model_id=model.id, name=alias, version_id=target.id))
            else:
                row.version_id = target.id
        self._changed(name)
        return self.get_version(name, version)

    def delete_alias(self, name: str, alias: str) -> None:
        check_alias(alias)
        with self.db.write() as s:
            model = self._model_row(s, name)
            row = next((a for a in model.aliases if a.name == alias), None)
            if row is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            s.delete(row)
        self._changed(name)

    def set_status(self, name: str, version: int, status: str) -> VersionInfo:
        if status not in ("active", "archived"):
            raise InvalidInput(f"invalid status {status!r}: expected 'active' or 'archived'")
        with self.db.write() as s:
            model = self._model_row(s, name)
            row = self._version_row(model, version)
            held = self._aliases_of(model, row.id)
            if status == "archived" and held:
                raise Conflict(
                    f"version {version} of {name!r} is the target of alias(es) {', '.join(held)}; "
                    "move them before archiving"
                )
            row.status = status
        self._changed(name)
        return self.get_version(name, version)

    def delete_version(self, name: str, version: int) -> None:
        with self.db.exclusive():
            with self.db.write() as s:
                model = self._model_row(s, name)
                row = self._version_row(model, version)
                held = self._aliases_of(model, row.id)
                if held:
                    raise Conflict(
                        f"version {version} of {name!r} is the target of alias(es) {', '.join(held)}; "
                        "move or delete them first"
                    )
                digests = {row.digest, *(f.digest for f in row.files)}
                s.delete(row)
            self._drop_unreferenced(digests)
        self._changed(name)

    def set_config(self, name: str, version: int, config: dict[str, Any]) -> VersionInfo:
        """Serving config (batching, instances) is the one mutable part of a version."""
        config = ServingConfig.parse(config).model_dump(exclude_defaults=True)
        with self.db.write() as s:
            model = self._model_row(s, name)
            self._version_row(model, version).config = config
        self._changed(name)
        return self.get_version(name, version)


def _media_type(file_name: str) -> str:
    return {
        ".onnx": "application/octet-stream",
        ".json": "application/json",
        ".png": "image/png",
    }.get(file_name[file_name.rfind(".") :], "application/octet-stream")
