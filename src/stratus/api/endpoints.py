"""Endpoints under /api/v1/endpoints: create, update (a rolling or canary rollout), roll back, delete,
revisions, events, and exports for Docker and Kubernetes. Each handler delegates to the endpoint service."""

from __future__ import annotations

import io
import tarfile
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from stratus.api.auth import ScopedRoute
from stratus.api.bounds import Name, ShortText
from stratus.api.deps import platform
from stratus.api.json_body import json_object
from stratus.api.openapi import json_body
from stratus.deploy import EndpointService
from stratus.deploy.export import docker_context, k8s_manifests
from stratus.deploy.spec import EndpointSpec, ScalingSpec
from stratus.errors import InvalidInput
from stratus.registry.names import NAME_PATTERN, check_name

router = APIRouter(prefix="/api/v1", tags=["endpoints"], route_class=ScopedRoute)

# The service validates the spec (400 with the field); the schema publishes the model it validates with. Rules
# across fields (weights adding up to more than 0, min_replicas <= max_replicas, increasing canary steps) are
# stated in the models' descriptions: JSON Schema cannot express them.
_CREATE_BODY = json_body(
    EndpointSpec, extra={"name": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 64}}, required=("name",)
)
_UPDATE_BODY = json_body(EndpointSpec)


def _service(request: Request) -> EndpointService:
    return platform(request).endpoints


@router.get("/endpoints")
def list_endpoints(request: Request) -> dict[str, Any]:
    return {"endpoints": _service(request).list_all()}


@router.post("/endpoints", status_code=201, openapi_extra=_CREATE_BODY)
async def create_endpoint(request: Request) -> dict[str, Any]:
    body = json_object(await request.body())
    name = body.pop("name", None)
    if not isinstance(name, str):
        raise InvalidInput("the endpoint needs a 'name'")
    return await run_in_threadpool(_service(request).create, name, body)


@router.get("/endpoints/{name}")
def get_endpoint(request: Request, name: Name) -> dict[str, Any]:
    return _service(request).get(name)


@router.put("/endpoints/{name}", openapi_extra=_UPDATE_BODY)
async def update_endpoint(request: Request, name: Name) -> dict[str, Any]:
    body = json_object(await request.body())
    body.pop("name", None)
    return await run_in_threadpool(_service(request).update, name, body)


@router.delete("/endpoints/{name}", status_code=204)
async def delete_endpoint(request: Request, name: Name) -> Response:
    await run_in_threadpool(_service(request).delete, name)
    return Response(status_code=204)


@router.post("/endpoints/{name}/rollback")
async def rollback_endpoint(request: Request, name: Name) -> dict[str, Any]:
    raw = await request.body()
    body = json_object(raw) if raw.strip() else {}
    revision = body.get("revision")
    if revision is not None and (not isinstance(revision, int) or isinstance(revision, bool) or revision < 1):
        raise InvalidInput("'revision' is a revision number (1, 2, ...)")
    return await run_in_threadpool(_service(request).rollback, name, revision)


@router.get("/endpoints/{name}/revisions")
def endpoint_revisions(request: Request, name: Name) -> dict[str, Any]:
    return {"revisions": _service(request).revisions(name)}


@router.get("/endpoints/{name}/events")
def endpoint_events(request: Request, name: Name) -> dict[str, Any]:
    return {"events": _service(request).events(name)}


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), int(now), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@router.get("/endpoints/{name}/export/docker")
async def export_docker(request: Request, name: Name) -> Response:
    """The Docker build context of the endpoint's live revision, as a .tar.gz."""
    service = _service(request)

    def build() -> bytes:
        for version, _weight in service.live_versions(name):
            service.registry.check_download(version.model)
        return _tar_gz(docker_context(name, service.bundle(name)))

    data = await run_in_threadpool(build)
    return Response(
        data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{check_name(name, "endpoint name")}-docker.tar.gz"'},
    )


@router.get("/endpoints/{name}/export/k8s")
def export_k8s(
    request: Request, name: Name, image: ShortText | None = None, namespace: Annotated[Name, Query()] = "default"
) -> Response:
    """Deployment, Service, HorizontalPodAutoscaler and KServe InferenceService manifests (YAML)."""
    described = _service(request).get(name)
    scaling = ScalingSpec.model_validate(described["spec"].get("scaling", {}))
    check_name(namespace, "namespace")
    text = k8s_manifests(name, image or f"stratus-{name}:latest", scaling, namespace)
    return Response(text, media_type="application/yaml")
