"""The runner's HTTP routes: the Open Inference Protocol (V2, JSON and binary) and V1 ``:predict`` as the
platform serves them, through the platform's own codec and error table (stratus.protocol), as a bare ASGI app
(no web framework); health, metadata and ``/edge/status``.

An answer says which side gave it in the ``Stratus-Answered-By`` header: ``edge``, or ``cloud`` for a request
the confidence rule forwarded and the cloud answered in time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from stratus import protocol
from stratus.errors import InvalidInput, NotFound, NotReady, PayloadTooLarge, StratusError, Unauthenticated
from stratus_edge import __version__
from stratus_edge.forward import Forwarder
from stratus_edge.model import Holder, Loaded
from stratus_edge.telemetry import Telemetry

log = logging.getLogger("stratus_edge.app")
ANSWERED_BY = "Stratus-Answered-By"
_V2_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_V2_MODEL = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready)?")
_V1_PREDICT = re.compile(r"/v1/models/([^/:]+)(?:/versions/([^/:]+))?:predict")
_V1_MODEL = re.compile(r"/v1/models/([^/:]+)(?:/versions/([^/:]+))?")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Reply = tuple[int, bytes, dict[str, str]]


def _json(value: Any, status: int = 200, **headers: str) -> Reply:
    return status, orjson.dumps(value), {"content-type": "application/json", **headers}


class EdgeApp:
    def __init__(
        self,
        holder: Holder,
        *,
        telemetry: Telemetry | None = None,
        forwarder: Forwarder | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
        token_sha256: str | None = None,
        max_body_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.holder = holder
        self.telemetry = telemetry
        self.forwarder = forwarder
        self._status = status or dict
        self._token_sha256 = token_sha256
        self.max_body_bytes = max_body_bytes
        self.limits = protocol.TensorLimits.for_request_bytes(max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            self._check_token(scope["path"], headers)
            status, body, extra = await self._route(scope["method"], scope["path"], headers, receive)
        except StratusError as exc:
            status, body, extra = _json({"error": exc.message}, protocol.status_for(exc))
            extra[protocol.KIND_HEADER] = protocol.kind_for(exc)
        except Exception:
            log.exception("%s %s crashed", scope["method"], scope["path"])
            status, body, extra = _json({"error": "internal error in the edge runner; see its log"}, 500)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in extra.items()],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _check_token(self, path: str, headers: dict[str, str]) -> None:
        if self._token_sha256 is None or path.startswith("/v2/health/"):
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, self._token_sha256):
            raise Unauthenticated("this runner needs its token: send the header 'Authorization: Bearer <token>'")

    async def _body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"the request body is larger than {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    def _model(self, name: str, version: str | None) -> Loaded:
        loaded = self.holder.current
        if loaded is None:
            raise NotReady("no bundle is loaded yet")
        if name != loaded.name:
            raise NotFound(f"model {name!r} is not served here; this runner serves {loaded.name!r}")
        if version is not None and version != str(loaded.version):
            raise NotFound(f"version {version} of model {name!r} is not served here; version {loaded.version} is")
        return loaded

    async def _route(self, method: str, path: str, headers: dict[str, str], receive: Receive) -> Reply:
        if method == "POST":
            if match := _V2_INFER.fullmatch(path):
                return await self._infer_v2(match[1], match[2], headers, await self._body(receive))
            if match := _V1_PREDICT.fullmatch(path):
                return await self._predict_v1(match[1], match[2], headers, await self._body(receive))
        elif method == "GET":
            if path == "/v2/health/live":
                return _json({"live": True})
            if path == "/v2/health/ready":
                ready = self.holder.current is not None
                return _json({"ready": ready}, 200 if ready else 503)
            if path == "/v2":
                return _json({"name": "stratus-edge", "version": __version__, "extensions": ["binary_tensor_data"]})
            if path == "/edge/status":
                return _json(self._status())
            if match := _V2_MODEL.fullmatch(path):
                loaded = self._model(match[1], match[2])
                if match[3]:
                    return _json({"name": loaded.name, "ready": True})
                return _json(
                    {
                        "name": loaded.name,
                        "versions": [str(loaded.version)],
                        "platform": "onnxruntime_onnx",
                        "inputs": [s.to_dict() for s in loaded.signature.inputs],
                        "outputs": [s.to_dict() for s in loaded.signature.outputs],
                    }
                )
            if match := _V1_MODEL.fullmatch(path):
                loaded = self._model(match[1], match[2])
                state = {"version": str(loaded.version), "state": "AVAILABLE", "status": {"error_code": "OK"}}
                return _json({"model_version_status": [state]})
        raise NotFound(f"no route {method} {path}")

    async def _run(self, loaded: Loaded, inputs: dict[str, Any], timeout_ms: float | None) -> dict[str, Any]:
        started = time.perf_counter()
        outputs = await loaded.served.infer(inputs, None, timeout_ms)
        if self.telemetry is not None:
            rows = len(next(iter(inputs.values()))) if inputs else 0
            self.telemetry.record(loaded.name, loaded.version, rows, time.perf_counter() - started, "edge")
        return outputs

    async def _cloud(self, loaded: Loaded, suffix: str, headers: dict[str, str], body: bytes) -> Reply | None:
        assert self.forwarder is not None
        answer = await self.forwarder.forward(loaded.name, suffix, body, headers)
        if answer is None:
            return None
        kept = {k: v for k, v in answer.headers.items() if k in ("content-type", "inference-header-content-length")}
        return answer.status, answer.body, kept | {ANSWERED_BY: "cloud"}

    async def _infer_v2(self, name: str, version: str | None, headers: dict[str, str], body: bytes) -> Reply:
        loaded = self._model(name, version)
        length = protocol.parse_header_length(headers.get("inference-header-content-length"))
        decoded = protocol.decode_infer_request(body, length, self.limits)
        outputs = await self._run(loaded, decoded.inputs, decoded.timeout_ms)
        if self.forwarder is not None and self.forwarder.wants(outputs):
            forwarded = await self._cloud(loaded, "/infer", headers, body)
            if forwarded is not None:
                return forwarded
        data, json_length = protocol.encode_infer_response(
            model_name=name,
            model_version=str(loaded.version),
            request_id=decoded.id,
            outputs=outputs,
            requested=decoded,
        )
        if json_length is None:
            return 200, data, {"content-type": "application/json", ANSWERED_BY: "edge"}
        return (
            200,
            data,
            {
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(json_length),
                ANSWERED_BY: "edge",
            },
        )

    async def _predict_v1(self, name: str, version: str | None, headers: dict[str, str], body: bytes) -> Reply:
        loaded = self._model(name, version)
        inputs = protocol.decode_predict_request(body, loaded.signature, self.limits)
        if not inputs:
            raise InvalidInput("the request has no inputs")
        outputs = await self._run(loaded, inputs, None)
        if self.forwarder is not None and self.forwarder.wants(outputs):
            forwarded = await self._cloud(loaded, ":predict", headers, body)
            if forwarded is not None:
                return forwarded
        return 200, protocol.encode_predictions(outputs), {"content-type": "application/json", ANSWERED_BY: "edge"}
