"""Explanations over HTTP: KServe V1's ``:explain`` verb and its V2 counterpart ``/explain``.

The body is the protocol's own inference request (V1 ``instances``/``inputs``, V2 ``inputs``); the options
are query parameters, so the body stays a valid inference request. The work happens in the explanation
workers (stratus/explain/pool.py); this module only decodes and answers. See docs/explain.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from stratus import protocol
from stratus.api.auth import ScopedRoute
from stratus.api.deps import platform
from stratus.api.v2 import tensor_limits
from stratus.explain.service import MAX_BACKGROUND, Options

router = APIRouter(tags=["explain"], route_class=ScopedRoute)

Method = Annotated[
    Literal["kernel", "permutation", "exact", "occlusion"] | None,
    Query(description="default: kernel (tabular), occlusion (images)"),
]
Space = Annotated[
    Literal["probability", "logit", "raw"] | None,
    Query(description="the output space explained; default: probability for a classifier, else raw"),
]
Target = Annotated[
    int | None, Query(ge=0, le=100_000, description="the class explained; default: each row's predicted")
]
Background = Annotated[int, Query(ge=2, le=MAX_BACKGROUND, description="background rows (tabular)")]
Evals = Annotated[int, Query(ge=0, le=100_000, description="model evaluations per row (kernel, permutation)")]
Patch = Annotated[int, Query(ge=0, le=1024, description="occlusion patch side in pixels; 0: about 16 x 16 regions")]
Baseline = Annotated[float, Query(ge=-1e6, le=1e6, description="the value occluded pixels take")]

_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}


def _options(
    method: str | None, output: str | None, target: int | None, background: int, max_evals: int, patch: int,
    baseline: float,
) -> Options:  # fmt: skip
    return Options(method, output, target, background, max_evals, patch, baseline)


async def _v1(request: Request, name: str, version: str | None, options: Options) -> dict[str, Any]:
    host = platform(request)
    target = host.dataplane.resolve(name, version)
    inputs = protocol.decode_predict_request(await request.body(), target.signature, tensor_limits(request))
    return await host.explain.explain(name, version, inputs, options)


async def _v2(request: Request, name: str, version: str | None, options: Options) -> dict[str, Any]:
    # The model first, as V1 does: another project's model, or none, is 404 whatever the body holds.
    platform(request).dataplane.resolve(name, version)
    header_length = protocol.parse_header_length(request.headers.get("inference-header-content-length"))
    decoded = protocol.decode_infer_request(await request.body(), header_length, tensor_limits(request))
    return await platform(request).explain.explain(name, version, decoded.inputs, options)


@router.post("/v1/models/{name}:explain", openapi_extra=_BODY)
async def explain_v1(
    request: Request, name: str, method: Method = None, output: Space = None, target: Target = None,
    background: Background = 50, max_evals: Evals = 0, patch: Patch = 0, baseline: Baseline = 0.0,
) -> dict[str, Any]:  # fmt: skip
    """Per-feature (tabular), per-pixel (image) attributions of the rows of a V1 predict body."""
    return await _v1(request, name, None, _options(method, output, target, background, max_evals, patch, baseline))


@router.post("/v1/models/{name}/versions/{version}:explain", openapi_extra=_BODY)
async def explain_v1_version(
    request: Request, name: str, version: str, method: Method = None, output: Space = None, target: Target = None,
    background: Background = 50, max_evals: Evals = 0, patch: Patch = 0, baseline: Baseline = 0.0,
) -> dict[str, Any]:  # fmt: skip
    return await _v1(request, name, version, _options(method, output, target, background, max_evals, patch, baseline))


@router.post("/v2/models/{name}/explain", openapi_extra=_BODY)
async def explain_v2(
    request: Request, name: str, method: Method = None, output: Space = None, target: Target = None,
    background: Background = 50, max_evals: Evals = 0, patch: Patch = 0, baseline: Baseline = 0.0,
) -> dict[str, Any]:  # fmt: skip
    """The same for a V2 infer body (JSON or binary tensors)."""
    return await _v2(request, name, None, _options(method, output, target, background, max_evals, patch, baseline))


@router.post("/v2/models/{name}/versions/{version}/explain", openapi_extra=_BODY)
async def explain_v2_version(
    request: Request, name: str, version: str, method: Method = None, output: Space = None, target: Target = None,
    background: Background = 50, max_evals: Evals = 0, patch: Patch = 0, baseline: Baseline = 0.0,
) -> dict[str, Any]:  # fmt: skip
    return await _v2(request, name, version, _options(method, output, target, background, max_evals, patch, baseline))
