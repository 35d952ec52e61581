"""The core's error kinds.

Services raise these; each protocol adapter (V2, V1, OpenAI, control plane, CLI, SDK) maps them to its
own statuses through the one table in stratus.protocol. Nothing here knows about HTTP or gRPC.
"""

from __future__ import annotations


class StratusError(Exception):
    """Base of every error the platform reports to a user. The message is meant for a person."""

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(StratusError):
    """The request itself is wrong: bad JSON, tensor shape, datatype, name, parameter."""

    kind = "invalid_input"


class UnsafeFormat(InvalidInput):
    """An upload in a format that could run code when loaded (pickle, joblib, torch checkpoints)."""

    kind = "unsafe_format"


class NotFound(StratusError):
    """A model, version, alias or other resource does not exist (or is not visible to the caller)."""

    kind = "not_found"


class Conflict(StratusError):
    """The request clashes with the current state: a duplicate name or version, an alias in use."""

    kind = "conflict"


class PayloadTooLarge(StratusError):
    """A request or upload is over the configured size limit."""

    kind = "payload_too_large"


class NotReady(StratusError):
    """The resource exists but cannot serve now: loading, unhealthy, or the queue is full."""

    kind = "not_ready"


class DeadlineExceeded(NotReady):
    """The request waited longer than its deadline before it could run."""

    kind = "deadline_exceeded"


class Unauthenticated(StratusError):
    kind = "unauthenticated"


class Forbidden(StratusError):
    kind = "forbidden"


class RateLimited(StratusError):
    kind = "rate_limited"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IntegrityError(StratusError):
    """Stored data failed verification (checksum mismatch). The affected version is taken out of service."""

    kind = "integrity_error"


class ConversionError(InvalidInput):
    """A model could not be converted to ONNX, or the ONNX did not reproduce the source model's outputs."""

    kind = "conversion_error"
