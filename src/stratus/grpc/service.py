"""The Open Inference Protocol's gRPC service over the data plane: the adapter counterpart of api/v2.py.

Each call passes the same access check as its HTTP route (``POLICY`` mirrors stratus.api.auth's table: the
API key comes as the metadata ``authorization: Bearer <key>``), runs as the caller's project
(stratus.tenancy), goes through the same data plane (and so the same metering and metrics, as protocol
"grpc"), and maps errors through the one table in stratus.protocol. Repository calls are audited like
their HTTP routes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from stratus import __version__, tenancy
from stratus.errors import InvalidInput, StratusError
from stratus.grpc import inference_pb2 as pb
from stratus.grpc.calls import Call, CallError, Method
from stratus.hosting import Host
from stratus.protocol import (
    DEFAULT_LIMITS,
    KIND_METADATA_KEY,
    TensorLimits,
    grpc_code_for,
    kind_for,
    repository_version,
    status_for,
)
from stratus.protocol.v2_grpc import decode_infer_request, fill_infer_response, parameters_of
from stratus.tenancy import Caller

log = logging.getLogger(__name__)

PUBLIC, READ, PREDICT, MANAGE = "public", "read", "predict", "manage"
#: The scope each call needs: the same as its HTTP route in stratus.api.auth.POLICY.
POLICY: dict[str, str] = {
    "ServerLive": PUBLIC,
    "ServerReady": PUBLIC,
    "ModelReady": READ,
    "ServerMetadata": READ,
    "ModelMetadata": READ,
    "ModelInfer": PREDICT,
    "RepositoryIndex": READ,
    "RepositoryModelLoad": MANAGE,
    "RepositoryModelUnload": MANAGE,
}
#: Calls written to the audit log, like the HTTP repository routes (POST under /v2/repository/).
AUDITED = frozenset({"RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"})
PLATFORM_NAME = "onnxruntime_onnx"
EXTENSIONS = ["model_repository"]


Reply = TypeVar("Reply")


def bearer_token(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _version(ref: str) -> str | None:
    return ref or None


def _repository_version(params: Any, allowed: tuple[str, ...]) -> str | None:
    """Load/unload take at most a registered version or alias, as over HTTP: model files and configs in
    the request are refused, a request never makes the server read a location it names."""
    return repository_version(parameters_of(params), allowed)


class InferenceService:
    def __init__(self, host: Host, limits: TensorLimits = DEFAULT_LIMITS) -> None:
        self.host = host
        self.limits = limits

    def methods(self, service: str) -> dict[str, Method]:
        """Each call by its path ("/inference.GRPCInferenceService/ModelInfer"): its request message and
        handler (the method of this class by the call's name)."""
        return {f"/{service}/{name}": Method(getattr(pb, f"{name}Request"), getattr(self, name)) for name in POLICY}

    async def _call(self, method: str, call: Call, target: str, work: Callable[[], Awaitable[Reply]]) -> Reply:
        required = POLICY[method]
        host = self.host
        caller: Caller | None = None
        failure: BaseException | None = None
        try:
            # Metadata as the request's headers (binary "-bin" values left out), for the services below.
            headers = call.metadata
            caller, key_rps = host.access.authenticate(bearer_token(headers.get("authorization")), required)
            host.access.authorize(caller, key_rps, required, counts_items=required == PREDICT)
            tenancy.enter(caller, headers)
            reply = await work()
        except Exception as exc:
            failure = exc
        if method in AUDITED:
            status, detail = (200, "") if failure is None else (status_for(failure), _message(failure))
            await asyncio.to_thread(host.audit.record, caller, f"gRPC {method}", target, call.peer, status, detail)
        if failure is None:
            return reply
        if not isinstance(failure, StratusError):
            log.error("gRPC %s crashed", method, exc_info=failure)
        raise CallError(grpc_code_for(failure), _message(failure), ((KIND_METADATA_KEY, kind_for(failure)),))

    # Method names are the service's (gRPC calls them by name).
    # -- health and metadata ------------------------------------------------------------------------

    async def ServerLive(self, request: Any, call: Call) -> Any:
        return await self._call("ServerLive", call, "", _const(pb.ServerLiveResponse(live=True)))

    async def ServerReady(self, request: Any, call: Call) -> Any:
        return await self._call("ServerReady", call, "", _const(pb.ServerReadyResponse(ready=self.host.started)))

    async def ServerMetadata(self, request: Any, call: Call) -> Any:
        reply = pb.ServerMetadataResponse(name="stratus", version=__version__, extensions=EXTENSIONS)
        return await self._call("ServerMetadata", call, "", _const(reply))

    async def ModelReady(self, request: Any, call: Call) -> Any:
        async def work() -> Any:
            ready = await self.host.dataplane.is_ready(request.name, _version(request.version))
            return pb.ModelReadyResponse(ready=ready)

        return await self._call("ModelReady", call, request.name, work)

    async def ModelMetadata(self, request: Any, call: Call) -> Any:
        async def work() -> Any:
            plane = self.host.dataplane
            version = plane.resolve(request.name, _version(request.version))
            if request.version:
                versions = [version.version]
            else:
                versions = [v.version for v in plane.versions_of(request.name) if v.status == "active"]
            signature = version.signature
            return pb.ModelMetadataResponse(
                name=request.name,
                versions=[str(v) for v in versions],
                platform=PLATFORM_NAME,
                inputs=[_tensor_metadata(spec) for spec in signature.inputs],
                outputs=[_tensor_metadata(spec) for spec in signature.outputs],
            )

        return await self._call("ModelMetadata", call, request.name, work)

    # -- inference ----------------------------------------------------------------------------------

    async def ModelInfer(self, request: Any, call: Call) -> Any:
        async def work() -> Any:
            decoded = decode_infer_request(request, self.limits)
            name = request.model_name
            if not name:
                raise InvalidInput("model_name is empty")
            result = await self.host.dataplane.infer(
                name,
                _version(request.model_version),
                decoded.inputs,
                decoded.outputs,
                timeout_ms=decoded.timeout_ms,
                protocol="grpc",
            )
            return fill_infer_response(
                pb.ModelInferResponse(),
                model_name=name,
                model_version=str(result.version.version),
                request_id=decoded.id,
                outputs=result.outputs,
                requested=decoded.outputs,
            )

        return await self._call("ModelInfer", call, request.model_name, work)

    # -- model repository extension -----------------------------------------------------------------

    async def RepositoryIndex(self, request: Any, call: Call) -> Any:
        async def work() -> Any:
            rows = await asyncio.to_thread(self.host.dataplane.repository_index, request.ready)
            return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows])

        return await self._call("RepositoryIndex", call, "", work)

    async def RepositoryModelLoad(self, request: Any, call: Call) -> Any:
        async def work() -> Any:
            version = _repository_version(request.parameters, ("version",))
            await self.host.dataplane.load(request.model_name, version)
            return pb.RepositoryModelLoadResponse()

        return await self._call("RepositoryModelLoad", call, request.model_name, work)

    async def RepositoryModelUnload(self, request: Any, call: Call) -> Any:
        async def work() -> Any:
            # Triton's client always sends unload_dependents; Stratus models have no dependents to unload.
            version = _repository_version(request.parameters, ("version", "unload_dependents"))
            self.host.dataplane.unload(request.model_name, version)
            return pb.RepositoryModelUnloadResponse()

        return await self._call("RepositoryModelUnload", call, request.model_name, work)


def _message(exc: BaseException) -> str:
    if isinstance(exc, StratusError):
        return exc.message
    return "internal server error; see the server log"


def _const(reply: Reply) -> Callable[[], Awaitable[Reply]]:
    async def work() -> Reply:
        return reply

    return work


def _tensor_metadata(spec: Any) -> Any:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
