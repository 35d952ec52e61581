"""Open Inference Protocol (KServe V2) over REST, with Triton's binary tensor data extension."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from stratus import __version__, protocol
from stratus.api.auth import ScopedRoute
from stratus.api.deps import dataplane, host
from stratus.api.model_config import triton_config
from stratus.api.responses import JSONBody
from stratus.errors import InvalidInput
from stratus.registry import VersionInfo

router = APIRouter(tags=["v2"], route_class=ScopedRoute)

PLATFORM_NAME = "onnxruntime_onnx"
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "required": ["inputs"]}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _metadata(name: str, version: VersionInfo, versions: list[int]) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM_NAME,
        "inputs": [spec.to_dict() for spec in version.signature.inputs],
        "outputs": [spec.to_dict() for spec in version.signature.outputs],
    }


def tensor_limits(request: Request) -> protocol.TensorLimits:
    """The bounds of decoded tensors, which the app sets from its body size limit (app.state.tensor_limits)."""
    limits = getattr(request.app.state, "tensor_limits", None)
    return limits if isinstance(limits, protocol.TensorLimits) else protocol.DEFAULT_LIMITS


async def _infer(request: Request, name: str, version: str | None) -> Response:
    header_length = protocol.parse_header_length(request.headers.get("inference-header-content-length"))
    decoded = protocol.decode_infer_request(await request.body(), header_length, tensor_limits(request))
    wanted = [o.name for o in decoded.outputs] if decoded.outputs else None
    result = await dataplane(request).infer(
        name, version, decoded.inputs, wanted, timeout_ms=decoded.timeout_ms, protocol="v2"
    )
    body, json_length = protocol.encode_infer_response(
        model_name=name,
        model_version=str(result.version.version),
        request_id=decoded.id,
        outputs=result.outputs,
        requested=decoded,
    )
    if json_length is None:
        return Response(body, media_type="application/json")
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(json_length)},
    )


@router.get("/v2/health/live")
async def server_live() -> JSONBody:
    return JSONBody({"live": True})


@router.get("/v2/health/ready")
async def server_ready(request: Request) -> JSONBody:
    ready = host(request).started
    return JSONBody({"ready": ready}, status_code=200 if ready else 503)


@router.get("/v2")
async def server_metadata() -> JSONBody:
    return JSONBody(
        {
            "name": "stratus",
            "version": __version__,
            "extensions": ["binary_tensor_data", "model_repository", "model_configuration"],
        }
    )


@router.get("/v2/models/{name}")
def model_metadata(request: Request, name: str) -> JSONBody:
    plane = dataplane(request)
    version = plane.resolve(name, None)
    active = [v.version for v in plane.versions_of(name) if v.status == "active"]
    return JSONBody(_metadata(name, version, active))


@router.get("/v2/models/{name}/versions/{version}")
def model_version_metadata(request: Request, name: str, version: str) -> JSONBody:
    resolved = dataplane(request).resolve(name, version)
    return JSONBody(_metadata(name, resolved, [resolved.version]))


@router.get("/v2/models/{name}/config")
def model_config(request: Request, name: str) -> JSONBody:
    plane = dataplane(request)
    active = [v.version for v in plane.versions_of(name) if v.status == "active"]
    return JSONBody(triton_config(name, plane.resolve(name, None), active))


@router.get("/v2/models/{name}/versions/{version}/config")
def model_version_config(request: Request, name: str, version: str) -> JSONBody:
    resolved = dataplane(request).resolve(name, version)
    return JSONBody(triton_config(name, resolved, [resolved.version]))


async def _ready(request: Request, name: str, version: str | None) -> JSONBody:
    ready = await dataplane(request).is_ready(name, version)
    return JSONBody({"name": name, "ready": ready}, status_code=200 if ready else 503)


@router.get("/v2/models/{name}/ready")
async def model_ready(request: Request, name: str) -> JSONBody:
    return await _ready(request, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_version_ready(request: Request, name: str, version: str) -> JSONBody:
    return await _ready(request, name, version)


@router.post("/v2/models/{name}/infer", openapi_extra=_INFER_BODY)
async def model_infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=_INFER_BODY)
async def model_version_infer(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)


# -- model repository extension -------------------------------------------------------------------

_REPOSITORY_BODY = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"ready": {"type": "boolean"}, "parameters": {"type": "object"}},
                }
            }
        },
    }
}


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    return protocol.json_object(raw) if raw.strip() else {}


def _version_parameter(body: dict[str, Any], allowed: tuple[str, ...] = ("version",)) -> str | None:
    """Load/unload take at most a registered version or alias. Model files, configs and URLs in the
    request are refused: a request must never make the server fetch or read a location it names."""
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput("parameters must be an object")
    return protocol.repository_version(params, allowed)


@router.post("/v2/repository/index", openapi_extra=_REPOSITORY_BODY)
async def repository_index(request: Request) -> JSONBody:
    body = await _json_object(request)
    ready, parameters = body.get("ready", False), body.get("parameters", {})
    if not isinstance(ready, bool) or not isinstance(parameters, dict):
        raise InvalidInput("'ready' must be a boolean and 'parameters' an object")
    rows = await run_in_threadpool(dataplane(request).repository_index, ready)
    return JSONBody(rows)


@router.post("/v2/repository/models/{name}/load", openapi_extra=_REPOSITORY_BODY)
async def repository_load(request: Request, name: str) -> JSONBody:
    version = await dataplane(request).load(name, _version_parameter(await _json_object(request)))
    return JSONBody({"name": name, "version": str(version.version), "state": "READY"})


@router.post("/v2/repository/models/{name}/unload", openapi_extra=_REPOSITORY_BODY)
async def repository_unload(request: Request, name: str) -> JSONBody:
    # Triton's client always sends unload_dependents; Stratus models have no dependents to unload.
    body = await _json_object(request)
    version = dataplane(request).unload(name, _version_parameter(body, ("version", "unload_dependents")))
    return JSONBody({"name": name, "version": str(version.version), "state": "UNAVAILABLE"})
