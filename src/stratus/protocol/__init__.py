"""The inference protocols as data, free of any web framework: the Open Inference Protocol (KServe V2)
request and response in JSON and Triton's binary tensor extension (both directions, server and client
side), the V1 ``instances``/``predictions`` format, the bounds every decoded tensor is held to, and the one
two-way table between the core's error kinds and HTTP and gRPC statuses.

Adapters (api/, grpc/, deploy/'s wire to replicas, sdk/) import from here, never from the private modules.
"""

from __future__ import annotations

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

__all__ = [
    "GRPC_CODES",
    "INTERNAL_GRPC",
    "INTERNAL_HTTP",
    "KIND_HEADER",
    "KIND_METADATA_KEY",
    "TABLE",
    "ErrorStatus",
    "error_for_grpc_code",
    "error_for_status",
    "grpc_code_for",
    "grpc_number",
    "kind_for",
    "status_for",
]
