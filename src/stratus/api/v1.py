"""The V1 prediction protocol (TF Serving / KServe V1): ``:predict`` with instances or inputs."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException

from stratus import protocol
from stratus.api.auth import ScopedRoute
from stratus.api.deps import dataplane
from stratus.api.responses import JSONBody
from stratus.api.v2 import tensor_limits
from stratus.errors import NotFound

router = APIRouter(tags=["v1"], route_class=ScopedRoute)

_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"instances": {"type": "array"}, "inputs": {}},
                }
            }
        },
    }
}


async def _predict(request: Request, name: str, version: str | None) -> Response:
    plane = dataplane(request)
    target = plane.resolve(name, version)
    inputs = protocol.decode_predict_request(await request.body(), target.signature, tensor_limits(request))
    result = await plane.infer(name, version, inputs, protocol="v1")
    return Response(protocol.encode_predictions(result.outputs), media_type="application/json")


def _status(request: Request, name: str, version: str | None) -> JSONBody:
    # A colon starts a verb in this protocol's paths (NAME:predict), never a name: a GET of the predict
    # resource is a method the resource does not allow, and any other verb names nothing.
    if ":" in name or ":" in (version or ""):
        if request.url.path.endswith(":predict"):
            raise HTTPException(405, "the predict resource takes POST", headers={"Allow": "POST"})
        raise NotFound(f"no resource {request.url.path!r}")
    plane = dataplane(request)
    versions = plane.versions_of(name) if version is None else [plane.resolve(name, version)]

    def state(status: str, health: str) -> str:
        return (
            "AVAILABLE" if status == "active" and health == "healthy" else "END" if status != "active" else "UNHEALTHY"
        )

    return JSONBody(
        {
            "model_version_status": [
                {
                    "version": str(v.version),
                    "state": state(v.status, v.health),
                    "status": {
                        "error_code": "OK" if v.health == "healthy" else "UNAVAILABLE",
                        "error_message": v.health_reason,
                    },
                }
                for v in versions
            ]
        }
    )


@router.post("/v1/models/{name}:predict", openapi_extra=_PREDICT_BODY)
async def predict(request: Request, name: str) -> Response:
    return await _predict(request, name, None)


@router.post("/v1/models/{name}/versions/{version}:predict", openapi_extra=_PREDICT_BODY)
async def predict_version(request: Request, name: str, version: str) -> Response:
    return await _predict(request, name, version)


@router.get("/v1/models/{name}")
def model_status(request: Request, name: str) -> JSONBody:
    return _status(request, name, None)


@router.get("/v1/models/{name}/versions/{version}")
def model_version_status(request: Request, name: str, version: str) -> JSONBody:
    return _status(request, name, version)
