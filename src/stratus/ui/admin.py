"""Keys and projects (admin only): list, create a key (its secret shown once, on the answer to the form) and
revoke one (which ends its console sessions at once), create a project with its limits."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import APIRouter, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from stratus.api.auth import ADMIN
from stratus.api.bounds import KeyId
from stratus.errors import InvalidInput
from stratus.security.keys import SCOPES, expiry_in
from stratus.ui.session import host_of, require
from stratus.ui.templating import render

router = APIRouter()
Number = TypeVar("Number", int, float)


def _number(text: str, kind: type[Number], what: str) -> Number | None:
    """A form's optional number: empty is None, anything else must parse (400 otherwise, never a 500)."""
    if not text.strip():
        return None
    try:
        value = kind(text.strip())
    except ValueError:
        raise InvalidInput(f"the {what} must be a number, not {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidInput(f"the {what} must be a finite number")
    return value


async def _keys_page(request: Request, created: dict[str, object] | None = None, status_code: int = 200) -> Response:
    keys = host_of(request).keys
    listed = await run_in_threadpool(keys.list_keys)
    projects = await run_in_threadpool(keys.list_projects)
    return render(
        request,
        "keys.html",
        status_code=status_code,
        title="API keys",
        keys=[k.to_dict() for k in reversed(listed)],
        projects=[p.name for p in projects],
        scopes=SCOPES,
        created=created,
    )


@router.get("/keys")
async def keys_page(request: Request) -> Response:
    require(request, ADMIN)
    return await _keys_page(request)


@router.post("/keys")
async def create_key(
    request: Request,
    project: Annotated[str, Form(max_length=63)],
    scope: Annotated[str, Form(max_length=16)],
    name: Annotated[str, Form(max_length=64)] = "",
    expires_in_days: Annotated[float | None, Form(gt=0, le=3650)] = None,
) -> Response:
    session = require(request, ADMIN)
    info, plaintext = await run_in_threadpool(
        host_of(request).keys.create_key,
        project,
        [scope],
        name=name,
        expires_at=expiry_in(expires_in_days),
        created_by=session.caller.key_id or None,
    )
    # The one answer that shows the secret: rendered, never redirected to (no URL holds it), and not stored
    # by any cache (the guard's no-store).
    return await _keys_page(request, created={**info.to_dict(), "key": plaintext}, status_code=201)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: KeyId) -> Response:
    require(request, ADMIN)
    host = host_of(request)
    await run_in_threadpool(host.keys.revoke, key_id)
    await run_in_threadpool(host.sessions.end_for_key, key_id)
    return RedirectResponse("/ui/keys", status_code=303)


@router.get("/projects")
async def projects_page(request: Request) -> Response:
    require(request, ADMIN)
    projects = await run_in_threadpool(host_of(request).keys.list_projects)
    return render(request, "projects.html", title="Projects", projects=projects)


@router.post("/projects")
async def create_project(
    request: Request,
    name: Annotated[str, Form(max_length=63)],
    rate_limit_rps: Annotated[str, Form(max_length=20)] = "",
    monthly_item_quota: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    require(request, ADMIN)
    rps = _number(rate_limit_rps, float, "rate limit")
    quota = _number(monthly_item_quota, int, "monthly item quota")
    await run_in_threadpool(host_of(request).keys.create_project, name, rate_limit_rps=rps, monthly_item_quota=quota)
    return RedirectResponse("/ui/projects", status_code=303)
