"""OpenAI-compatible API under /openai/v1 for text models: embeddings and the model list.

A text embedding model is any registered model with one BYTES input and an ``embedding`` output (an
optional ``token_count`` output feeds ``usage``). Requests go through the same data plane, batcher and
metrics as V2 and V1.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from stratus.api.auth import ScopedRoute
from stratus.api.deps import dataplane
from stratus.api.responses import JSONBody
from stratus.errors import InvalidInput, NotFound
from stratus.registry import VersionInfo

router = APIRouter(prefix="/openai/v1", tags=["openai"], route_class=ScopedRoute)

MAX_INPUTS = 2048


class EmbeddingsRequest(BaseModel):
    input: str | list[str] | list[int] | list[list[int]] = Field(description="Text or a list of texts.")
    model: str = Field(description="A registered text embedding model: NAME or NAME:VERSION_OR_ALIAS.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


def _split_model(model: str) -> tuple[str, str | None]:
    name, _, ref = model.partition(":")
    return name, ref or None


def _resolve(request: Request, model: str) -> tuple[str, str | None, VersionInfo]:
    """As OpenAI answers it, a model string that names no model (malformed ones included) is not found."""
    name, ref = _split_model(model)
    try:
        return name, ref, dataplane(request).resolve(name, ref)
    except InvalidInput:
        raise NotFound(f"model {model!r} does not exist") from None


def _is_text_embedder(version: VersionInfo) -> bool:
    inputs = version.signature.inputs
    return len(inputs) == 1 and inputs[0].datatype == "BYTES" and "embedding" in version.signature.output_names()


def _texts(raw: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    texts = [raw] if isinstance(raw, str) else raw
    if not texts:
        raise InvalidInput("'input' must not be empty")
    if not all(isinstance(t, str) for t in texts):
        raise InvalidInput("'input' must be a string or a list of strings; token arrays are not accepted")
    if len(texts) > MAX_INPUTS:
        raise InvalidInput(f"'input' has {len(texts)} items; at most {MAX_INPUTS} per request")
    if any(t == "" for t in texts):
        raise InvalidInput("'input' must not contain empty strings")
    return texts  # type: ignore[return-value]


def _encode(vector: np.ndarray[Any, Any], encoding: str) -> np.ndarray[Any, Any] | str:
    """float: the array itself (orjson writes numpy directly); base64: little-endian float32 bytes."""
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector


_EMBEDDINGS_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": EmbeddingsRequest.model_json_schema()}},
    }
}


def _parse(body: bytes) -> EmbeddingsRequest:
    # pydantic straight from the JSON bytes: the hot path skips FastAPI's body machinery.
    try:
        return EmbeddingsRequest.model_validate_json(body)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid request: {detail}") from None


@router.post("/embeddings", openapi_extra=_EMBEDDINGS_BODY)
async def create_embeddings(request: Request) -> Response:
    body = _parse(await request.body())
    plane = dataplane(request)
    name, ref, version = _resolve(request, body.model)
    if not _is_text_embedder(version):
        raise InvalidInput(f"model {body.model!r} is not a text embedding model (one text input, an embedding output)")
    width = next(o.shape[-1] for o in version.signature.outputs if o.name == "embedding")
    if body.dimensions is not None and width > 0 and body.dimensions != width:
        raise InvalidInput(f"model {body.model!r} produces {width} dimensions, not {body.dimensions}")
    texts = _texts(body.input)
    wanted = ["embedding"] + (["token_count"] if "token_count" in version.signature.output_names() else [])
    result = await plane.infer(
        name, ref, {version.signature.inputs[0].name: np.array(texts, dtype=object)}, wanted, protocol="openai"
    )
    vectors = result.outputs["embedding"].astype(np.float32, copy=False)
    tokens = int(result.outputs["token_count"].sum()) if "token_count" in result.outputs else 0
    payload = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(vectors[i], body.encoding_format)}
            for i in range(len(texts))
        ],
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def _model_card(version: VersionInfo) -> dict[str, Any]:
    return {
        "id": version.model,
        "object": "model",
        "created": int(version.created_at.timestamp()),
        "owned_by": "stratus",
    }


def _text_models(request: Request) -> list[dict[str, Any]]:
    plane = dataplane(request)
    cards = []
    for model in plane.registry.list_models():
        try:
            version = plane.resolve(model.name)
        except NotFound:
            continue
        if _is_text_embedder(version):
            cards.append(_model_card(version))
    for name in plane.endpoint_names():  # an endpoint of a text model is called like one
        version = plane.resolve(name)
        if _is_text_embedder(version):
            cards.append({**_model_card(version), "id": name})
    return cards


@router.get("/models")
async def list_models(request: Request) -> JSONBody:
    return JSONBody({"object": "list", "data": await run_in_threadpool(_text_models, request)})


@router.get("/models/{model}")
def retrieve_model(request: Request, model: str) -> JSONBody:
    _name, _ref, version = _resolve(request, model)
    if not _is_text_embedder(version):
        raise NotFound(f"model {model!r} is not a text model")
    return JSONBody(_model_card(version))
