"""The inference protocols as data, free of any web framework: the Open Inference Protocol (KServe V2)
request and response in JSON and Triton's binary tensor extension (both directions, server and client
side), the V1 ``instances``/``predictions`` format, the bounds every decoded tensor is held to, and the one
two-way table between the core's error kinds and HTTP and gRPC statuses.

Adapters (api/, grpc/, deploy/'s wire to replicas, sdk/) import from here, never from the private modules.
"""

from __future__ import annotations

from stratus.protocol._bounds import (
    DEFAULT_LIMITS,
    INT64_MAX,
    MAX_RANK,
    NUMPY_LIMITS,
    TensorLimits,
    check_shape,
    parse_count,
)
from stratus.protocol._json import json_object
from stratus.protocol._repository import repository_version
from stratus.protocol._status import (
    GRPC_CODES,
    INTERNAL_GRPC,
    INTERNAL_HTTP,
    KIND_HEADER,
    KIND_METADATA_KEY,
    TABLE,
    ErrorStatus,
    error_for_grpc_code,
    error_for_status,
    grpc_code_for,
    grpc_number,
    kind_for,
    status_for,
)
from stratus.protocol._v1 import decode_predict_request, encode_predictions
from stratus.protocol._v2 import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH_HEADER,
    JSON_CONTENT_TYPE,
    InferRequest,
    InferResponse,
    RequestedOutput,
    decode_infer_request,
    decode_infer_response,
    encode_infer_request,
    encode_infer_response,
    parse_header_length,
    timeout_ms,
)
from stratus.protocol._v2_binary import tensor_from_bytes, tensor_to_bytes

__all__ = [
    "BINARY_CONTENT_TYPE",
    "DEFAULT_LIMITS",
    "GRPC_CODES",
    "HEADER_LENGTH_HEADER",
    "INT64_MAX",
    "INTERNAL_GRPC",
    "INTERNAL_HTTP",
    "JSON_CONTENT_TYPE",
    "KIND_HEADER",
    "KIND_METADATA_KEY",
    "MAX_RANK",
    "NUMPY_LIMITS",
    "TABLE",
    "ErrorStatus",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "TensorLimits",
    "check_shape",
    "decode_infer_request",
    "decode_infer_response",
    "decode_predict_request",
    "encode_infer_request",
    "encode_infer_response",
    "encode_predictions",
    "error_for_grpc_code",
    "error_for_status",
    "grpc_code_for",
    "grpc_number",
    "json_object",
    "kind_for",
    "parse_count",
    "parse_header_length",
    "repository_version",
    "status_for",
    "tensor_from_bytes",
    "tensor_to_bytes",
    "timeout_ms",
]
