"""Error bodies of the HTTP API. The statuses come from the protocol table (stratus.protocol); the kind's
name goes with them in the Stratus-Error-Kind header, so a client tells apart the kinds that share a status."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from stratus import errors
from stratus.api.responses import JSONBody
from stratus.protocol import KIND_HEADER, kind_for, status_for

log = logging.getLogger(__name__)

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def error_response(request: Request, status: int, message: str, kind: str) -> JSONBody:
    headers: dict[str, str] = {}
    if request.url.path.startswith("/openai/"):
        body: dict[str, object] = {
            "error": {"message": message, "type": _OPENAI_TYPES.get(status, "api_error"), "code": kind}
        }
    else:
        body = {"error": message}
    return JSONBody(body, status_code=status, headers=headers)


async def _stratus_error(request: Request, exc: Exception) -> JSONBody:
    assert isinstance(exc, errors.StratusError)
    status = status_for(exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    response = error_response(request, status, exc.message, exc.kind)
    response.headers[KIND_HEADER] = kind_for(exc)
    if isinstance(exc, errors.RateLimited):
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONBody:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return error_response(request, 422, "invalid request: " + "; ".join(parts), "invalid_input")


async def _http_error(request: Request, exc: Exception) -> JSONBody:
    assert isinstance(exc, HTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    response = error_response(request, exc.status_code, message, "http_error")
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONBody:
    # The request id ties the answer (message and X-Request-ID) to the traceback in the log.
    request_id = uuid.uuid4().hex
    log.exception("%s %s crashed (request id %s)", request.method, request.url.path, request_id)
    message = f"internal server error (request id {request_id}); see the server log"
    response = error_response(request, 500, message, "internal")
    response.headers["X-Request-ID"] = request_id
    return response


async def response_for(request: Request, exc: Exception) -> JSONBody:
    """What the app's exception handlers answer for ``exc``, for code that runs outside them (the fast lane)."""
    if isinstance(exc, errors.StratusError):
        return await _stratus_error(request, exc)
    if isinstance(exc, RequestValidationError):
        return await _validation_error(request, exc)
    if isinstance(exc, HTTPException):
        return await _http_error(request, exc)
    return await _unexpected(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.StratusError, _stratus_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
