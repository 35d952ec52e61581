"""The published OpenAPI schema, made to describe what the server really does.

FastAPI's generated schema documents only 200 and its own 422 shape; the server also answers errors from
the services (stratus.protocol's table), the edge (host check 400, body limit 413, a 500 with a request
id), authentication (401/403/429), and media types other than JSON. ``truthful_openapi`` starts from the
generated schema and adds, per operation: the error statuses it can return with the one error body,
bearer security, the real media types of its bodies, and the rules of path parameters that the services
check themselves. Client generators and gateways read this schema; tests/security/test_fuzzing.py holds
the server to it with schemathesis' checks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from stratus.api.bounds import JSON_SAFE_MAX, MAX_VERSION, VERSION_REF_PATTERN
from stratus.protocol import DEFAULT_LIMITS, MAX_RANK, TensorLimits
from stratus.registry.names import NAME_PATTERN
from stratus.security.access import PUBLIC
from stratus.types import V2_TO_NUMPY

#: Component schemas that documented request bodies refer to (see ``json_body``).
_COMPONENTS: dict[str, Any] = {}
_REF = "#/components/schemas/{model}"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "description": "What went wrong; an object {message, type, code} under /openai/",
            "anyOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "required": ["message"],
                    "properties": {"message": {"type": "string"}, "type": {"type": "string"}, "code": {}},
                },
            ],
        },
    },
}

_DESCRIPTIONS = {
    400: "Invalid request (the message names the field), or a Host header this server does not answer to",
    401: "Missing, unknown, expired or revoked API key",
    403: "The key's scope or project does not allow this",
    404: "Not found (or not visible to the caller's project)",
    409: "Conflicts with the current state",
    413: "Request body over the size limit",
    415: "Unsafe or unsupported upload format, or an unsupported Content-Encoding",
    422: "A parameter or body field outside its schema",
    429: "Rate limit or monthly quota exceeded; see Retry-After",
    500: "Unexpected server error; the body carries a request id",
    503: "Not ready, or a stored artifact failed its integrity check",
    504: "The request's deadline passed before it ran",
}

_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_JSON_ANY: dict[str, Any] = {"application/json": {"schema": {}}}
#: The inference log: a JSON page, or an export (format=jsonl or parquet).
_LOG_MEDIA: dict[str, Any] = {
    **_JSON_ANY,
    "application/x-ndjson": {"schema": {"type": "string"}},
    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
}
#: The success media types of routes that do not answer JSON (or not only JSON).
_SUCCESS_MEDIA: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/metrics"): _TEXT,
    ("post", "/v2/models/{name}/infer"): {**_JSON_ANY, **_BINARY},
    ("post", "/v2/models/{name}/versions/{version}/infer"): {**_JSON_ANY, **_BINARY},
    ("get", "/api/v1/models/{name}/versions/{version}/artifact"): _BINARY,
    ("get", "/api/v1/models/{name}/versions/{version}/files/{file}"): {
        **_JSON_ANY,
        **_BINARY,
        "image/png": {"schema": {"type": "string", "format": "binary"}},
    },
    ("get", "/api/v1/endpoints/{name}/export/docker"): {
        "application/gzip": {"schema": {"type": "string", "format": "binary"}}
    },
    ("get", "/api/v1/endpoints/{name}/export/k8s"): {"application/yaml": {"schema": {"type": "string"}}},
    ("get", "/api/v1/jobs/{job_id}/events"): {"text/event-stream": {"schema": {"type": "string"}}},
    ("get", "/api/v1/models/{name}/log"): _LOG_MEDIA,
    ("get", "/api/v1/endpoints/{name}/log"): _LOG_MEDIA,
}
#: Prefixes of the routes that run models: they can also be not ready (503) or past their deadline (504).
_SERVING_PREFIXES = ("/v2/models/", "/v1/models/", "/openai/", "/v2/repository/")
#: Routes that read a stored artifact, which is verified on read (503 when it fails the check).
_ARTIFACT_MARKERS = ("/artifact", "/files/", "/export/", "/compress", "/endpoints")
_PATH_PATTERNS = {"name": (NAME_PATTERN, 64), "version": (VERSION_REF_PATTERN, 64)}


_OBJECT = {"type": "object"}
#: Any JSON value the control plane accepts: integers within the JSON-safe range (the edge refuses others,
#: see edge.StrictJSONBodies), finite numbers, and arrays and objects of such values.
JSON_VALUE: dict[str, Any] = {
    "description": "Any JSON value whose integers lie within +-(2**53 - 1)",
    "anyOf": [
        {"type": "integer", "minimum": -JSON_SAFE_MAX, "maximum": JSON_SAFE_MAX},
        {"type": "number", "not": {"type": "integer"}},
        {"type": ["string", "boolean", "null"]},
        {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
        {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}},
    ],
}
_JSON_VALUE_REF = {"$ref": "#/components/schemas/JsonValue"}
_V2_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    # The values come in "data", or after the JSON when the binary extension names their size.
    "anyOf": [
        {"required": ["data"]},
        {"required": ["parameters"], "properties": {"parameters": {"required": ["binary_data_size"]}}},
    ],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "shape": {"type": "array", "maxItems": MAX_RANK, "items": {"type": "integer", "minimum": 0}},
        "datatype": {"enum": list(V2_TO_NUMPY)},
        "parameters": _OBJECT,
        "data": {"type": "array", "description": "Row-major values; their count is the product of the shape"},
    },
}
_V2_INFER = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": _OBJECT,
        "inputs": {"type": "array", "minItems": 1, "items": _V2_TENSOR},
        "outputs": {
            "type": "array",
            "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        },
    },
}
_V1_PREDICT = {
    "type": "object",
    "properties": {"instances": {"type": "array", "minItems": 1}, "inputs": {}},
    "anyOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
}
_TEXT_ITEM = {"type": "string", "minLength": 1}
_EMBEDDINGS = {
    "type": "object",
    "required": ["input", "model"],
    "properties": {
        "input": {"anyOf": [_TEXT_ITEM, {"type": "array", "minItems": 1, "maxItems": 2048, "items": _TEXT_ITEM}]},
        "model": {"type": "string", "minLength": 1, "description": "NAME or NAME:VERSION_OR_ALIAS"},
        "encoding_format": {"enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1, "maximum": JSON_SAFE_MAX},
        "user": {"type": "string"},
    },
}
_VERSION_PARAMETER = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
        {"type": "string", "pattern": VERSION_REF_PATTERN, "maxLength": 64},
    ]
}


def _repository(*extra: str) -> dict[str, Any]:
    """Load and unload take a registered version or alias and nothing else (no files, configs or URLs)."""
    properties: dict[str, Any] = {"version": _VERSION_PARAMETER, **{name: {"type": "boolean"} for name in extra}}
    parameters = {"type": "object", "properties": properties, "additionalProperties": False}
    # Triton's clients send "parameters": null when there are none; so may a version's value be null.
    properties["version"] = {"anyOf": [_VERSION_PARAMETER, {"type": "null"}]}
    return {"type": "object", "properties": {"parameters": {"anyOf": [parameters, {"type": "null"}]}}}


#: Bodies the handlers parse themselves, documented as the codecs read them.
_REQUEST_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v2/models/{name}/infer"): _V2_INFER,
    ("post", "/v2/models/{name}/versions/{version}/infer"): _V2_INFER,
    ("post", "/v1/models/{name}:predict"): _V1_PREDICT,
    ("post", "/v1/models/{name}/versions/{version}:predict"): _V1_PREDICT,
    ("post", "/openai/v1/embeddings"): _EMBEDDINGS,
    ("post", "/v2/repository/index"): {
        "type": "object",
        "properties": {"ready": {"type": "boolean"}, "parameters": _OBJECT},
    },
    ("post", "/v2/repository/models/{name}/load"): _repository(),
    ("post", "/v2/repository/models/{name}/unload"): _repository("unload_dependents"),
}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``model``, its nested models registered as components."""
    schema = model.model_json_schema(ref_template=_REF)
    _COMPONENTS.update(schema.pop("$defs", {}))
    return schema


def json_body(
    model: type[BaseModel],
    *,
    extra: dict[str, Any] | None = None,
    required: tuple[str, ...] = (),
    replace: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body with the schema of ``model``, the model the service
    validates it with (so the schema is the validator's own). ``extra`` adds properties the route takes
    besides the model's, ``required`` names those the route requires, ``replace`` states properties more
    exactly than the model's field type can (the service checks them further)."""
    schema = model_schema(model)
    if extra:
        schema["properties"] = {**extra, **schema.get("properties", {})}
        schema["required"] = [*required, *schema.get("required", [])]
    if replace:
        schema["properties"] = {**schema.get("properties", {}), **replace}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    public = operation.get("x-required-scope") == PUBLIC
    # Every request passes the host check (400), the body limit (413) and the catch-all (500).
    statuses = {400, 413, 500}
    if not public:
        statuses |= {401, 403, 429}
    if "422" in operation.get("responses", {}):  # FastAPI's own validation: declared parameters or body
        statuses.add(422)
    # A resource named in the path, or by a "name" query parameter (the metrics series of a model).
    named = any(p.get("in") == "query" and p.get("name") == "name" for p in operation.get("parameters", []))
    if not public and ("{" in path or method != "get" or path.startswith(_SERVING_PREFIXES) or named):
        statuses.add(404)
    if method in ("post", "put", "patch", "delete"):
        statuses |= {409, 415}
    if path.startswith(_SERVING_PREFIXES) or path.endswith("/ready"):
        statuses |= {503, 504}
    if any(marker in path for marker in _ARTIFACT_MARKERS):
        statuses.add(503)
    if path.endswith("/join"):  # a federated job whose server is still starting (docs/federated.md)
        statuses.add(503)
    return statuses


def _bound_free_form(node: Any) -> None:
    """Free-form objects and arrays hold JsonValues: what the edge accepts inside them, stated."""
    if isinstance(node, list):
        for item in node:
            _bound_free_form(item)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "object" and node.get("additionalProperties", True) is True:
        # Also a model's extra fields, which it ignores: the edge still reads their values.
        node["additionalProperties"] = _JSON_VALUE_REF
    if kind == "array" and "items" not in node:
        node["items"] = _JSON_VALUE_REF
    for key, value in node.items():
        if key not in ("enum", "const", "default", "examples"):
            _bound_free_form(value)


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query, header or form field is absent or text: ``null`` is not a value it can carry."""
    variants = schema.get("anyOf")
    if variants and {"type": "null"} in variants:
        rest = [v for v in variants if v != {"type": "null"}]
        others = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
        return {**rest[0], **others} if len(rest) == 1 else {**others, "anyOf": rest}
    return schema


def _document(method: str, path: str, operation: dict[str, Any], limits: TensorLimits) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for status in sorted(_statuses(method, path, operation)):
        entry = responses.setdefault(str(status), {"description": _DESCRIPTIONS[status]})
        entry["description"] = _DESCRIPTIONS[status]
        entry["content"] = error
    body = _REQUEST_BODIES.get((method, path))
    if body is not None:
        body = copy.deepcopy(body)
        if "inputs" in body.get("properties", {}) and "items" in body["properties"]["inputs"]:
            # One dimension can be no larger than the whole tensor may be (this server's tensor limits).
            shape = body["properties"]["inputs"]["items"]["properties"]["shape"]
            shape["items"]["maximum"] = min(limits.max_elements, JSON_SAFE_MAX)
        operation["requestBody"]["content"]["application/json"] = {"schema": body}
    for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
        schema = content.get("schema", {})
        if media_type == "multipart/form-data" and "properties" in schema:
            schema["properties"] = {k: _not_null(v) for k, v in schema["properties"].items()}
        _bound_free_form(schema)
    media = _SUCCESS_MEDIA.get((method, path))
    if media is not None:
        for code, entry in responses.items():
            if code.startswith("2"):
                entry["content"] = media
    if operation.get("x-required-scope") != PUBLIC:
        operation["security"] = [{"bearer": []}]
    for parameter in operation.get("parameters", []):
        rule = _PATH_PATTERNS.get(parameter["name"])
        parameter["schema"] = schema = _not_null(parameter.get("schema", {}))
        if parameter["in"] == "path" and rule and schema.get("type") == "string" and "pattern" not in schema:
            schema.update(pattern=rule[0], maxLength=rule[1])


def truthful_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The function to install as ``app.openapi``."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            limits: TensorLimits = getattr(app.state, "tensor_limits", DEFAULT_LIMITS)
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            schemas.update(_COMPONENTS)
            schemas["Error"] = ERROR_SCHEMA
            for name, component in schemas.items():
                if name != "Error":
                    _bound_free_form(component)
            schemas["JsonValue"] = JSON_VALUE
            components["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key: stk_<id>_<secret>"}
            }
            for path, item in schema.get("paths", {}).items():
                for method, operation in item.items():
                    _document(method, path, operation, limits)
                    form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data", {})
                    ref = form.get("schema", {}).get("$ref", "")
                    component = schemas.get(ref.rsplit("/", 1)[-1], {})
                    if "properties" in component:
                        component["properties"] = {k: _not_null(v) for k, v in component["properties"].items()}
            app.openapi_schema = schema
        return app.openapi_schema

    return build
