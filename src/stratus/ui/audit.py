"""The audit log (admin only): every control-plane change and sign-in, newest first, with filters and pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from stratus.api.auth import ADMIN
from stratus.security.keys import check_project_name
from stratus.ui.session import host_of, require
from stratus.ui.templating import render

router = APIRouter()
PAGE = 100
SINCE = {"": "any time", "1": "last hour", "24": "last 24 hours", "168": "last 7 days"}


@router.get("/audit")
async def audit(
    request: Request,
    project: Annotated[str, Query(max_length=63)] = "",
    key_id: Annotated[str, Query(max_length=12, pattern=r"^[0-9a-f]{0,12}$")] = "",
    action: Annotated[str, Query(max_length=100)] = "",
    outcome: Literal["", "failed", "ok"] = "",
    hours: Literal["", "1", "24", "168"] = "",
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    require(request, ADMIN)
    if project:
        check_project_name(project)
    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=int(hours)) if hours else None
    entries = await run_in_threadpool(
        host_of(request).audit.query,
        limit=PAGE,
        since=since,
        key_id=key_id or None,
        project=project or None,
        action=action or None,
        failed={"failed": True, "ok": False}.get(outcome),
        before=before,
    )
    filters = {"project": project, "key_id": key_id, "action": action, "outcome": outcome, "hours": hours}
    return render(
        request,
        "audit.html",
        title="Audit log",
        entries=entries,
        filters=filters,
        since_choices=SINCE,
        next_before=entries[-1].id if len(entries) == PAGE else None,
    )
