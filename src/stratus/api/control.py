"""Control plane under /api/v1: models, versions (with multipart upload) and aliases.

Each handler checks its input shape and delegates to the registry; the registry enforces the rules.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from pydantic import BaseModel, Field, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from stratus.api.auth import ScopedRoute
from stratus.api.bounds import (
    Alias,
    BodyVersion,
    Name,
    NewAlias,
    Segment,
    ShortText,
    Task,
    Text,
    VersionNumber,
    VersionRef,
)
from stratus.api.deps import registry
from stratus.api.openapi import model_schema
from stratus.errors import InvalidInput
from stratus.runtime.config import ServingConfig

router = APIRouter(prefix="/api/v1", tags=["control"], route_class=ScopedRoute)


class ModelCreate(BaseModel):
    name: Name = Field(description="1-64 lowercase letters, digits, '-' or '_'")
    description: Text = ""
    task: Task = "other"
    tags: dict[str, str] = Field(default_factory=dict)


class ModelUpdate(BaseModel):
    description: Text | None = None
    task: Task | None = None
    tags: dict[str, str] | None = None
    allow_download: bool | None = Field(
        default=None, strict=True, description="Whether manage keys may download artifacts"
    )


class VersionUpdate(BaseModel):
    status: Literal["active", "archived"] | None = None
    # The registry validates the config with ServingConfig (400 with the field); the schema publishes it.
    config: Annotated[
        dict[str, Any] | None, WithJsonSchema({"anyOf": [model_schema(ServingConfig), {"type": "null"}]})
    ] = None


class AliasSet(BaseModel):
    version: BodyVersion


def _json_field(raw: str | None, field: str) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidInput(f"form field {field!r} must be a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"form field {field!r} must be a JSON object")
    return value


@router.get("/models")
def list_models(request: Request) -> dict[str, Any]:
    return {"models": [m.to_dict() for m in registry(request).list_models()]}


@router.post("/models", status_code=201)
def create_model(request: Request, body: ModelCreate) -> dict[str, Any]:
    return (
        registry(request)
        .create_model(body.name, description=body.description, task=body.task, tags=dict(body.tags))
        .to_dict()
    )


@router.get("/models/{name}")
def get_model(request: Request, name: Name) -> dict[str, Any]:
    return registry(request).get_model(name).to_dict()


@router.patch("/models/{name}")
def update_model(request: Request, name: Name, body: ModelUpdate) -> dict[str, Any]:
    return (
        registry(request)
        .update_model(
            name,
            description=body.description,
            task=body.task,
            tags=None if body.tags is None else dict(body.tags),
            allow_download=body.allow_download,
        )
        .to_dict()
    )


@router.delete("/models/{name}", status_code=204)
def delete_model(request: Request, name: Name) -> Response:
    registry(request).delete_model(name)
    return Response(status_code=204)


@router.get("/models/{name}/versions")
def list_versions(request: Request, name: Name) -> dict[str, Any]:
    return {"versions": [v.to_dict() for v in registry(request).list_versions(name)]}


@router.post("/models/{name}/versions", status_code=201)
async def upload_version(
    request: Request,
    name: Name,
    file: Annotated[UploadFile, File(description="The model as an ONNX file. Pickle and joblib are refused.")],
    version: Annotated[VersionNumber | None, Form()] = None,
    description: Annotated[Text, Form()] = "",
    metrics: Annotated[str | None, Form(description="JSON object")] = None,
    params: Annotated[str | None, Form(description="JSON object")] = None,
    config: Annotated[str | None, Form(description="JSON object: serving config")] = None,
    parent_version: Annotated[VersionNumber | None, Form()] = None,
    dataset: Annotated[ShortText | None, Form()] = None,
    source: Annotated[ShortText | None, Form()] = None,
    task: Annotated[Task, Form()] = "other",
    format: Annotated[
        Literal["onnx", "pipeline"], Form(description="onnx, or pipeline (file is the JSON spec)")
    ] = "onnx",
    files: Annotated[
        list[UploadFile] | None, File(description="A pipeline's files, each named as its spec names it.")
    ] = None,
) -> dict[str, Any]:
    data = await file.read()
    reg = registry(request)
    if format == "pipeline":
        extra: dict[str, bytes] = {}
        for upload in files or []:
            if not upload.filename or upload.filename in extra:
                raise InvalidInput("each pipeline file needs a distinct file name, as the spec names it")
            extra[upload.filename] = await upload.read()
        register = partial(reg.register_pipeline, name, data, extra)
    else:
        if files:
            raise InvalidInput("extra files go with format=pipeline only")
        register = partial(reg.register_onnx, name, data, filename=file.filename)
    info = await run_in_threadpool(
        register,
        version=version,
        description=description,
        metrics=_json_field(metrics, "metrics"),
        params=_json_field(params, "params"),
        config=_json_field(config, "config"),
        parent_version=parent_version,
        dataset=dataset,
        source=source,
        task=task,
    )
    return info.to_dict()


@router.get("/models/{name}/versions/{version}")
def get_version(request: Request, name: Name, version: VersionRef) -> dict[str, Any]:
    return registry(request).resolve(name, version).to_dict()


@router.patch("/models/{name}/versions/{version}")
def update_version(request: Request, name: Name, version: VersionNumber, body: VersionUpdate) -> dict[str, Any]:
    reg = registry(request)
    info = reg.get_version(name, version)
    if body.config is not None:
        info = reg.set_config(name, version, body.config)
    if body.status is not None:
        info = reg.set_status(name, version, body.status)
    return info.to_dict()


@router.delete("/models/{name}/versions/{version}", status_code=204)
def delete_version(request: Request, name: Name, version: VersionNumber) -> Response:
    registry(request).delete_version(name, version)
    return Response(status_code=204)


@router.get("/models/{name}/versions/{version}/artifact")
def download_artifact(request: Request, name: Name, version: VersionNumber) -> Response:
    reg = registry(request)
    reg.check_download(name)
    info = reg.get_version(name, version)
    return Response(
        reg.read_artifact(info),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{info.model}-{info.version}.onnx"'},
    )


@router.get("/models/{name}/versions/{version}/files/{file}")
def download_file(request: Request, name: Name, version: VersionNumber, file: Segment) -> Response:
    """A further artifact of a version (evaluation.json, confusion_matrix.png, a pipeline's files)."""
    reg = registry(request)
    reg.check_download(name)
    info = reg.get_version(name, version)
    media = "image/png" if file.endswith(".png") else "application/json" if file.endswith(".json") else None
    return Response(reg.read_file(info, file), media_type=media or "application/octet-stream")


@router.get("/models/{name}/aliases")
def list_aliases(request: Request, name: Name) -> dict[str, Any]:
    return {"aliases": registry(request).get_model(name).aliases}


@router.put("/models/{name}/aliases/{alias}")
def set_alias(
    request: Request,
    name: Name,
    alias: NewAlias,
    body: AliasSet,
) -> dict[str, Any]:
    return registry(request).set_alias(name, alias, body.version).to_dict()


@router.delete("/models/{name}/aliases/{alias}", status_code=204)
def delete_alias(request: Request, name: Name, alias: Alias) -> Response:
    registry(request).delete_alias(name, alias)
    return Response(status_code=204)
