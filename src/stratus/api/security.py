"""Security and metering under /api/v1: the caller, projects, API keys, the audit log, usage."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from stratus.api.auth import ScopedRoute, caller_of
from stratus.api.bounds import (
    KeyId,
    KeyIdFilter,
    KeyName,
    Moment,
    MonthlyItems,
    ProjectFilter,
    ProjectName,
    RateLimit,
    Scope,
)
from stratus.api.deps import platform
from stratus.api.responses import JSONBody
from stratus.errors import InvalidInput
from stratus.metering.usage import GROUPS
from stratus.security.keys import SCOPES, expiry_in

router = APIRouter(prefix="/api/v1", tags=["security"], route_class=ScopedRoute)

_GROUP = f"(?:{'|'.join(GROUPS)})"
#: A comma-separated list of groups; blanks around and between commas are ignored, as the handler splits.
GROUP_BY_PATTERN = rf"^ *(?:{_GROUP} *)?(?:, *(?:{_GROUP} *)?)*$"


class ProjectCreate(BaseModel):
    name: ProjectName = Field(description="1-63 lowercase letters, digits and '-'")
    rate_limit_rps: RateLimit | None = Field(default=None, description="Requests/s per project; 0 = unlimited")
    monthly_item_quota: MonthlyItems | None = Field(default=None, description="Inferred items per month; 0 = unlimited")


class ProjectUpdate(BaseModel):
    rate_limit_rps: RateLimit | None = None
    monthly_item_quota: MonthlyItems | None = None


class KeyCreate(BaseModel):
    scopes: list[Scope] = Field(min_length=1, description=f"Any of {', '.join(SCOPES)}")
    project: ProjectName | None = Field(default=None, description="Project the key acts in. Default: the caller's.")
    name: KeyName = ""
    expires_in_days: float | None = Field(default=None, strict=True, allow_inf_nan=False, ge=0.001, le=3650)
    rate_limit_rps: RateLimit | None = None


@router.get("/whoami")
def whoami(request: Request) -> dict[str, Any]:
    caller = caller_of(request)
    return {"project": caller.project, "key_id": caller.key_id or None, "scopes": sorted(caller.scopes)}


@router.get("/projects")
def list_projects(request: Request) -> dict[str, Any]:
    return {"projects": [p.to_dict() for p in platform(request).keys.list_projects()]}


@router.post("/projects", status_code=201)
def create_project(request: Request, body: ProjectCreate) -> dict[str, Any]:
    return (
        platform(request)
        .keys.create_project(body.name, rate_limit_rps=body.rate_limit_rps, monthly_item_quota=body.monthly_item_quota)
        .to_dict()
    )


@router.patch("/projects/{project}")
def update_project(request: Request, project: ProjectName, body: ProjectUpdate) -> dict[str, Any]:
    plat = platform(request)
    info = plat.keys.update_project(project, body.model_dump(exclude_unset=True))
    plat.access.forget_project(project)
    return info.to_dict()


@router.get("/keys")
def list_keys(request: Request, project: ProjectFilter | None = None) -> dict[str, Any]:
    return {"keys": [k.to_dict() for k in platform(request).keys.list_keys(project)]}


@router.post("/keys", status_code=201)
def create_key(request: Request, body: KeyCreate) -> dict[str, Any]:
    caller = caller_of(request)
    info, plaintext = platform(request).keys.create_key(
        caller.project if body.project is None else body.project,
        body.scopes,
        name=body.name,
        expires_at=expiry_in(body.expires_in_days),
        rate_limit_rps=body.rate_limit_rps,
        created_by=caller.key_id or None,
    )
    return {**info.to_dict(), "key": plaintext}


@router.delete("/keys/{key_id}")
def revoke_key(request: Request, key_id: KeyId) -> dict[str, Any]:
    return platform(request).keys.revoke(key_id).to_dict()


@router.get("/audit")
def audit(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    since: Moment | None = None,
    key_id: KeyIdFilter | None = None,
    project: ProjectFilter | None = None,
) -> dict[str, Any]:
    entries = platform(request).audit.query(limit=limit, since=since, key_id=key_id, project=project)
    return {"events": [e.to_dict() for e in entries]}


@router.get("/usage")
async def usage(
    request: Request,
    start: Annotated[Moment | None, Query(alias="from")] = None,
    end: Annotated[Moment | None, Query(alias="to")] = None,
    group_by: Annotated[str, Query(pattern=GROUP_BY_PATTERN, max_length=200)] = "project,model",
    project: ProjectFilter | None = None,
) -> JSONBody:
    """Usage of the caller's project; an admin sees every project unless ``project`` is given."""
    caller = caller_of(request)
    if "admin" not in caller.scopes:
        if project not in (None, caller.project):
            raise InvalidInput("only an admin key can read another project's usage")
        project = caller.project
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    report = await run_in_threadpool(
        platform(request).usage.query, start=start, end=end, group_by=groups, project=project
    )
    return JSONBody(report.to_dict())
