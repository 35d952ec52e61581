"""Edge devices under /api/v1 (docs/edge.md): enrollment, the registry, bundle export and the device routes
(sync, telemetry), and the platform's bundle signing key at a well-known route."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, Field, StringConstraints

from stratus.api.auth import ScopedRoute
from stratus.api.bounds import Name, VersionRef
from stratus.api.deps import platform
from stratus.devices.bundles import DEFAULT_BUDGET

router = APIRouter(tags=["devices"], route_class=ScopedRoute)

DeviceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$", max_length=16)]
DeviceName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", max_length=63)]
Token = Annotated[str, StringConstraints(pattern=r"^sde_[0-9a-f]{12}_[A-Za-z0-9_-]{20,64}$", max_length=81)]
PublicKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}=$", max_length=44)]
BatchId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$", max_length=64)]
Count = Annotated[int, Field(strict=True, ge=0, le=10**12)]
_ZIP = {"responses": {"200": {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}}}


class TokenCreate(BaseModel):
    ttl_seconds: float | None = Field(
        default=None, strict=True, allow_inf_nan=False, gt=0, le=30 * 86400, description="Default: one day"
    )


class Enrollment(BaseModel):
    token: Token = Field(description="A one-time token from POST /api/v1/device-tokens")
    name: DeviceName
    public_key: PublicKey | None = Field(default=None, description="X25519 public key (base64) to encrypt bundles to")


class TelemetryRecord(BaseModel):
    model: Name
    requests: Count
    items: Count = 0
    compute_ms: float = Field(default=0.0, strict=True, allow_inf_nan=False, ge=0, le=1e15)


class TelemetryBatch(BaseModel):
    batch_id: BatchId = Field(description="Chosen by the device; a batch sent again is not counted again")
    records: list[TelemetryRecord] = Field(max_length=1000)
    bundle: Annotated[str, StringConstraints(max_length=128)] = ""
    health: Annotated[str, StringConstraints(max_length=200)] = ""


@router.get("/.well-known/stratus-edge-key")
def signing_key(request: Request) -> dict[str, Any]:
    signer = platform(request).devices.signer
    return {"algorithm": "Ed25519", "key_id": signer.key_id, "public_key": signer.public_b64}


@router.post("/api/v1/device-tokens", status_code=201)
def create_token(request: Request, body: TokenCreate) -> dict[str, Any]:
    return platform(request).devices.create_token(body.ttl_seconds)


@router.post(
    "/api/v1/device/enroll",
    status_code=201,
    responses={401: {"description": "An unknown, used or expired enrollment token"}},
)
def enroll(request: Request, body: Enrollment) -> dict[str, Any]:
    info, key = platform(request).devices.enroll(body.token, body.name, body.public_key or "")
    return {"device": info.to_dict(), "key": key}


@router.get("/api/v1/devices")
def list_devices(request: Request) -> dict[str, Any]:
    return {"devices": [d.to_dict() for d in platform(request).devices.list_devices()]}


@router.get("/api/v1/devices/{device_id}")
def get_device(request: Request, device_id: DeviceId) -> dict[str, Any]:
    return platform(request).devices.get(device_id).to_dict()


@router.delete("/api/v1/devices/{device_id}")
def revoke_device(request: Request, device_id: DeviceId) -> dict[str, Any]:
    return platform(request).devices.revoke(device_id).to_dict()


@router.get("/api/v1/models/{name}/edge-bundle", response_class=Response, openapi_extra=_ZIP)
def export_bundle(
    request: Request,
    name: Name,
    ref: Annotated[VersionRef | None, Query(description="Version or alias; default production")] = None,
    budget: Annotated[float, Query(ge=0, le=1, allow_inf_nan=False, description="int8 budget")] = DEFAULT_BUDGET,
    device: Annotated[DeviceId | None, Query(description="Encrypt to this device")] = None,
) -> Response:
    data = platform(request).devices.export(name, ref, budget, device)
    disposition = f'attachment; filename="{name}-edge.zip"'
    return Response(data, media_type="application/zip", headers={"Content-Disposition": disposition})


@router.get("/api/v1/device/bundle", response_class=Response, openapi_extra=_ZIP)
def sync_bundle(
    request: Request,
    model: Annotated[Name, Query(description="The model to serve")],
    ref: Annotated[VersionRef | None, Query(description="Version or alias; default production")] = None,
    if_none_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    etag, data = platform(request).devices.sync(model, ref, if_none_match)
    if data is None:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(data, media_type="application/zip", headers={"ETag": etag})


@router.post("/api/v1/device/telemetry")
def telemetry(request: Request, body: TelemetryBatch) -> dict[str, Any]:
    records = [r.model_dump() for r in body.records]
    return platform(request).devices.telemetry(body.batch_id, records, body.bundle, body.health)
