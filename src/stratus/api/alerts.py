"""Alert rules under /api/v1/alerts and their history under /api/v1/alert-history, for the caller's project.

Reading needs ``read``; creating, changing and deleting a rule needs ``manage`` (a rule makes the server call
a URL). The rule's webhook secret is in the creation answer only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from annotated_types import Interval
from fastapi import APIRouter, Query, Request, Response
from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, StrictBool, StringConstraints
from pydantic import Strict as StrictType
from starlette.concurrency import run_in_threadpool

from stratus.api.auth import ScopedRoute
from stratus.api.bounds import Name
from stratus.api.deps import platform
from stratus.monitoring.alerts import MAX_FOR_SECONDS, MAX_THRESHOLD, METRICS
from stratus.monitoring.alerts_service import MAX_HISTORY, AlertService
from stratus.security.outbound import MAX_URL_LENGTH

router = APIRouter(prefix="/api/v1", tags=["alerts"], route_class=ScopedRoute)

Metric = Literal["error_rate", "p99_ms", "drift_share", "log_dropped"]
Comparison = Literal[">", ">=", "<", "<="]
Threshold = Annotated[float, StrictType(), AllowInfNan(False), Interval(ge=-MAX_THRESHOLD, le=MAX_THRESHOLD)]
Duration = Annotated[float, StrictType(), AllowInfNan(False), Interval(ge=0, le=MAX_FOR_SECONDS)]
WebhookUrl = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URL_LENGTH)]

_METRICS_HELP = "; ".join(f"{name}: {meaning}" for name, meaning in METRICS.items())


class AlertCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    target_kind: Literal["model", "endpoint"] = "model"
    target: Name = Field(description="The model or endpoint the rule watches (it need not exist yet).")
    metric: Metric = Field(description=_METRICS_HELP)
    op: Comparison = ">"
    threshold: Threshold
    for_seconds: Duration = Field(default=0.0, description="How long the condition must hold before the rule fires.")
    webhook_url: WebhookUrl | None = Field(
        default=None,
        description="http(s) URL called on fire and resolve with a signed JSON body; it must resolve to public "
        "addresses unless an admin allowed the network (STRATUS_OUTBOUND_ALLOWED_NETWORKS).",
    )
    enabled: StrictBool = True


class AlertUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: Metric | None = None
    op: Comparison | None = None
    threshold: Threshold | None = None
    for_seconds: Duration | None = None
    webhook_url: WebhookUrl | None = None
    enabled: StrictBool | None = None


def _service(request: Request) -> AlertService:
    return platform(request).alerts


@router.get("/alerts")
def list_alerts(request: Request) -> dict[str, Any]:
    return {"alerts": _service(request).list_all()}


@router.post("/alerts", status_code=201)
async def create_alert(request: Request, body: AlertCreate) -> dict[str, Any]:
    # The webhook URL is resolved (DNS) to check it: off the event loop.
    return await run_in_threadpool(_service(request).create, body.model_dump())


@router.get("/alerts/{name}")
def get_alert(request: Request, name: Name) -> dict[str, Any]:
    return _service(request).get(name)


@router.patch("/alerts/{name}")
async def update_alert(request: Request, name: Name, body: AlertUpdate) -> dict[str, Any]:
    """Change a rule; a field left out keeps its value, ``"webhook_url": null`` removes the webhook."""
    return await run_in_threadpool(_service(request).update, name, body.model_dump(exclude_unset=True))


@router.delete("/alerts/{name}", status_code=204)
def delete_alert(request: Request, name: Name) -> Response:
    _service(request).delete(name)
    return Response(status_code=204)


@router.get("/alert-history")
def alert_history(
    request: Request,
    name: Annotated[Name | None, Query(description="Only this rule's events (404 if it never existed).")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 100,
) -> dict[str, Any]:
    return {"events": _service(request).history(name, limit)}
