"""Authentication, authorization and audit for every route, declared in one table.

Each router uses ``ScopedRoute``, which looks its route up in ``POLICY`` when the route is declared: a
route missing from the table cannot be created, so no endpoint ships without a decision. The required
scope is also published in the OpenAPI schema as ``x-required-scope``, which the authorization-matrix
test reads.

A request is authorized before its handler runs (and before a body is read), then the caller is set
for the services (stratus.tenancy). Control-plane changes (anything but GET under /api and /v2/repository)
are written to the audit log with their result, refusals included.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from stratus import tenancy
from stratus.errors import StratusError
from stratus.hosting import Host
from stratus.protocol import status_for
from stratus.security.access import PUBLIC
from stratus.security.scopes import EDGE, FEDERATED
from stratus.tenancy import Caller

READ, PREDICT, MANAGE, ADMIN = "read", "predict", "manage", "admin"

POLICY: dict[tuple[str, str], str] = {
    # Open Inference Protocol (V2)
    ("GET", "/v2/health/live"): PUBLIC,
    ("GET", "/v2/health/ready"): PUBLIC,
    ("GET", "/v2"): READ,
    ("GET", "/v2/models/{name}"): READ,
    ("GET", "/v2/models/{name}/versions/{version}"): READ,
    ("GET", "/v2/models/{name}/ready"): READ,
    ("GET", "/v2/models/{name}/versions/{version}/ready"): READ,
    ("GET", "/v2/models/{name}/config"): READ,
    ("GET", "/v2/models/{name}/versions/{version}/config"): READ,
    ("POST", "/v2/models/{name}/infer"): PREDICT,
    ("POST", "/v2/models/{name}/versions/{version}/infer"): PREDICT,
    ("POST", "/v2/repository/index"): READ,
    ("POST", "/v2/repository/models/{name}/load"): MANAGE,
    ("POST", "/v2/repository/models/{name}/unload"): MANAGE,
    # V1
    ("POST", "/v1/models/{name}:predict"): PREDICT,
    ("POST", "/v1/models/{name}/versions/{version}:predict"): PREDICT,
    ("GET", "/v1/models/{name}"): READ,
    # Explanations (docs/explain.md): computed by worker processes beside serving, with the predict scope
    ("POST", "/v1/models/{name}:explain"): PREDICT,
    ("POST", "/v1/models/{name}/versions/{version}:explain"): PREDICT,
    ("POST", "/v2/models/{name}/explain"): PREDICT,
    ("POST", "/v2/models/{name}/versions/{version}/explain"): PREDICT,
    ("GET", "/v1/models/{name}/versions/{version}"): READ,
    # OpenAI-compatible
    ("POST", "/openai/v1/embeddings"): PREDICT,
    ("GET", "/openai/v1/models"): READ,
    ("GET", "/openai/v1/models/{model}"): READ,
    # Monitoring
    ("GET", "/metrics"): READ,
    ("GET", "/openapi.json"): READ,
    # Registry
    ("GET", "/api/v1/models"): READ,
    ("POST", "/api/v1/models"): MANAGE,
    ("GET", "/api/v1/models/{name}"): READ,
    ("PATCH", "/api/v1/models/{name}"): MANAGE,
    ("DELETE", "/api/v1/models/{name}"): MANAGE,
    ("GET", "/api/v1/models/{name}/versions"): READ,
    ("POST", "/api/v1/models/{name}/versions"): MANAGE,
    ("GET", "/api/v1/models/{name}/versions/{version}"): READ,
    ("PATCH", "/api/v1/models/{name}/versions/{version}"): MANAGE,
    ("DELETE", "/api/v1/models/{name}/versions/{version}"): MANAGE,
    # Downloading a model's bytes is its IP: manage only, and the model may forbid it.
    ("GET", "/api/v1/models/{name}/versions/{version}/artifact"): MANAGE,
    ("GET", "/api/v1/models/{name}/versions/{version}/files/{file}"): MANAGE,
    ("GET", "/api/v1/models/{name}/aliases"): READ,
    ("PUT", "/api/v1/models/{name}/aliases/{alias}"): MANAGE,
    ("DELETE", "/api/v1/models/{name}/aliases/{alias}"): MANAGE,
    # Datasets and jobs
    ("GET", "/api/v1/datasets"): READ,
    ("POST", "/api/v1/datasets"): MANAGE,
    ("POST", "/api/v1/datasets/builtin"): MANAGE,
    ("GET", "/api/v1/datasets/{name}"): READ,
    ("DELETE", "/api/v1/datasets/{name}"): MANAGE,
    ("POST", "/api/v1/jobs"): MANAGE,
    ("POST", "/api/v1/models/{name}/versions/{version}/compress"): MANAGE,
    ("POST", "/api/v1/automl"): MANAGE,
    ("GET", "/api/v1/jobs/{job_id}/leaderboard"): READ,
    ("POST", "/api/v1/personalize"): MANAGE,
    ("GET", "/api/v1/jobs"): READ,
    ("GET", "/api/v1/jobs/{job_id}"): READ,
    ("GET", "/api/v1/jobs/{job_id}/logs"): READ,
    ("POST", "/api/v1/jobs/{job_id}/cancel"): MANAGE,
    ("GET", "/api/v1/jobs/{job_id}/events"): READ,
    # Endpoints (deployments)
    ("GET", "/api/v1/endpoints"): READ,
    ("POST", "/api/v1/endpoints"): MANAGE,
    ("GET", "/api/v1/endpoints/{name}"): READ,
    ("PUT", "/api/v1/endpoints/{name}"): MANAGE,
    ("DELETE", "/api/v1/endpoints/{name}"): MANAGE,
    ("POST", "/api/v1/endpoints/{name}/rollback"): MANAGE,
    ("GET", "/api/v1/endpoints/{name}/revisions"): READ,
    ("GET", "/api/v1/endpoints/{name}/events"): READ,
    # Exports carry the models' bytes: manage only, like artifact downloads.
    ("GET", "/api/v1/endpoints/{name}/export/docker"): MANAGE,
    ("GET", "/api/v1/endpoints/{name}/export/k8s"): MANAGE,
    # Security and metering
    ("GET", "/api/v1/whoami"): READ,
    ("GET", "/api/v1/projects"): ADMIN,
    ("POST", "/api/v1/projects"): ADMIN,
    ("PATCH", "/api/v1/projects/{project}"): ADMIN,
    ("GET", "/api/v1/keys"): ADMIN,
    ("POST", "/api/v1/keys"): ADMIN,
    ("DELETE", "/api/v1/keys/{key_id}"): ADMIN,
    ("GET", "/api/v1/audit"): ADMIN,
    ("GET", "/api/v1/usage"): READ,
    # Inference log and metrics history: reading the log shows payloads (user data), so manage, like a
    # model's bytes; its settings are read with read, changed with manage.
    ("GET", "/api/v1/models/{name}/logging"): READ,
    ("PUT", "/api/v1/models/{name}/logging"): MANAGE,
    ("DELETE", "/api/v1/models/{name}/logging"): MANAGE,
    ("GET", "/api/v1/endpoints/{name}/logging"): READ,
    ("PUT", "/api/v1/endpoints/{name}/logging"): MANAGE,
    ("DELETE", "/api/v1/endpoints/{name}/logging"): MANAGE,
    ("GET", "/api/v1/models/{name}/log"): MANAGE,
    ("GET", "/api/v1/endpoints/{name}/log"): MANAGE,
    ("GET", "/api/v1/metrics/series"): READ,
    # Alerts: a rule makes the server call a URL, so changing one needs manage.
    ("GET", "/api/v1/alerts"): READ,
    ("POST", "/api/v1/alerts"): MANAGE,
    ("GET", "/api/v1/alerts/{name}"): READ,
    ("PATCH", "/api/v1/alerts/{name}"): MANAGE,
    ("DELETE", "/api/v1/alerts/{name}"): MANAGE,
    ("GET", "/api/v1/alert-history"): READ,
    # Drift: figures only (scores, shares), never logged values; a reference upload replaces what is compared.
    ("GET", "/api/v1/models/{name}/drift"): READ,
    ("GET", "/api/v1/endpoints/{name}/drift"): READ,
    ("GET", "/api/v1/models/{name}/drift/history"): READ,
    ("GET", "/api/v1/endpoints/{name}/drift/history"): READ,
    ("GET", "/api/v1/models/{name}/versions/{version}/reference"): READ,
    ("PUT", "/api/v1/models/{name}/versions/{version}/reference"): MANAGE,
    # Edge devices (docs/edge.md): the signing key is public, enrollment is authorized by its one-time token,
    # a bundle carries the model's bytes (manage, like a download); the device routes take an edge key only.
    ("GET", "/.well-known/stratus-edge-key"): PUBLIC,
    ("POST", "/api/v1/device-tokens"): MANAGE,
    ("POST", "/api/v1/device/enroll"): PUBLIC,
    ("GET", "/api/v1/devices"): READ,
    ("GET", "/api/v1/devices/{device_id}"): READ,
    ("DELETE", "/api/v1/devices/{device_id}"): MANAGE,
    ("GET", "/api/v1/models/{name}/edge-bundle"): MANAGE,
    ("GET", "/api/v1/device/bundle"): EDGE,
    ("POST", "/api/v1/device/telemetry"): EDGE,
    # Federated learning (docs/federated.md): a job and its client keys need manage; joining takes a federated key
    # bound to the job (off the ladder, like an edge key), checked against the job by the service.
    ("POST", "/api/v1/federated/jobs"): MANAGE,
    ("POST", "/api/v1/federated/jobs/{job_id}/keys"): MANAGE,
    ("POST", "/api/v1/federated/jobs/{job_id}/join"): FEDERATED,
}

#: ASGI scope key under which the web console's bridge (stratus.ui) hands over the signed-in session's caller and
#: rate limit: set only in-process, on a scope the bridge builds, so no client can send it (a header cannot).
#: The scope check, rate limit, quota and audit below apply to it exactly as to a bearer key.
CONSOLE_CALLER = "stratus.console_caller"

#: Routes whose requests infer items, and so count against the project's monthly quota.
INFERENCE_SCOPE = PREDICT
_AUDITED_PREFIXES = ("/api/", "/v2/repository/")

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def caller_of(request: Request) -> Caller:
    caller: Caller = request.scope.get("stratus.caller", tenancy.current())
    return caller


class ScopedRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        methods = sorted(kwargs.get("methods") or ["GET"])
        scopes = {POLICY.get((method.upper(), path)) for method in methods}
        if None in scopes or len(scopes) != 1:
            raise LookupError(f"route {methods} {path} has no access policy: add it to stratus.api.auth.POLICY")
        self.required_scope: str = scopes.pop()  # type: ignore[assignment]
        kwargs["openapi_extra"] = {**(kwargs.get("openapi_extra") or {}), "x-required-scope": self.required_scope}
        # Set before super().__init__, which builds the handler.
        self.audited = any(path.startswith(p) for p in _AUDITED_PREFIXES) and methods != ["GET"]
        super().__init__(path, endpoint, **kwargs)

    @property
    def audit_action(self) -> str:
        """What the audit log calls this route's requests; empty for a route that is not audited."""
        return f"{sorted(self.methods or ['GET'])[0]} {self.path}" if self.audited else ""

    def get_route_handler(self) -> Handler:
        return guarded(super().get_route_handler(), self.required_scope, self.audit_action)


def guarded(handler: Handler, required: str, action: str) -> Handler:
    """``handler`` behind the access check for the ``required`` scope, audited as ``action`` if not empty."""
    counts_items = required == INFERENCE_SCOPE

    async def authorized(request: Request) -> Response:
        platform: Host = request.app.state.platform
        caller: Caller | None = None
        try:
            console = request.scope.get(CONSOLE_CALLER)
            if console is not None:  # a console session's request, forwarded in-process by stratus.ui's bridge
                caller, key_rps = console
            else:
                caller, key_rps = platform.access.authenticate(bearer_token(request), required)
            platform.access.authorize(caller, key_rps, required, counts_items=counts_items)
            tenancy.enter(caller, request.headers)
            request.scope["stratus.caller"] = caller
            response = await handler(request)
        except Exception as exc:
            if action:
                status, detail = _outcome(exc)
                await _audit(platform, request, caller, action, status, detail)
            raise
        if action:
            await _audit(platform, request, caller, action, response.status_code, "")
        return response

    return authorized


def _outcome(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, StratusError):
        return status_for(exc), exc.message
    if isinstance(exc, RequestValidationError):
        return 422, "invalid request"
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    return 500, "internal error"


async def _audit(
    platform: Host, request: Request, caller: Caller | None, action: str, status: int, detail: str
) -> None:
    address = request.client.host if request.client else ""
    await run_in_threadpool(platform.audit.record, caller, action, request.url.path, address, status, detail)
