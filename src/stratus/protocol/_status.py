"""The one two-way table between the core's error kinds and transport statuses: HTTP status codes and
gRPC status codes. Every adapter (HTTP API, gRPC, the router's wire to replicas, the SDK) maps errors here
and nowhere else.

gRPC codes are given as their ``grpc.StatusCode`` names and numbers, so this module needs no grpc import.

Some statuses carry more than one kind (503 is NotReady and IntegrityError; gRPC's INVALID_ARGUMENT is
every kind of bad input). A server therefore also sends the kind's name next to the status (the HTTP
header ``Stratus-Error-Kind``, the gRPC trailing metadata key ``stratus-error-kind``), and the way back
(``error_for_status``, ``error_for_grpc_code``) trusts that name only when its status agrees with the
status that came: a peer cannot turn a 404 into a RateLimited by naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

from stratus import errors

#: The HTTP header and the gRPC metadata key (lower case, as gRPC requires) that name the error kind.
KIND_HEADER = "Stratus-Error-Kind"
KIND_METADATA_KEY = "stratus-error-kind"

#: ``grpc.StatusCode`` names and their numbers (the gRPC status code spec).
GRPC_CODES: dict[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
_GRPC_NAMES: dict[int, str] = {number: name for name, number in GRPC_CODES.items()}


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    kind: type[errors.StratusError]
    http: int
    grpc: str


#: Most specific first: UnsafeFormat and ConversionError are InvalidInput too, DeadlineExceeded is NotReady.
TABLE: tuple[ErrorStatus, ...] = (
    ErrorStatus(errors.UnsafeFormat, 415, "INVALID_ARGUMENT"),
    ErrorStatus(errors.ConversionError, 422, "INVALID_ARGUMENT"),
    ErrorStatus(errors.InvalidInput, 400, "INVALID_ARGUMENT"),
    ErrorStatus(errors.NotFound, 404, "NOT_FOUND"),
    ErrorStatus(errors.Conflict, 409, "ALREADY_EXISTS"),
    ErrorStatus(errors.PayloadTooLarge, 413, "RESOURCE_EXHAUSTED"),
    ErrorStatus(errors.Unauthenticated, 401, "UNAUTHENTICATED"),
    ErrorStatus(errors.Forbidden, 403, "PERMISSION_DENIED"),
    ErrorStatus(errors.RateLimited, 429, "RESOURCE_EXHAUSTED"),
    ErrorStatus(errors.DeadlineExceeded, 504, "DEADLINE_EXCEEDED"),
    ErrorStatus(errors.NotReady, 503, "UNAVAILABLE"),
    ErrorStatus(errors.IntegrityError, 503, "DATA_LOSS"),
)
#: What an error that is no StratusError (a bug) answers.
INTERNAL_HTTP = 500
INTERNAL_GRPC = "INTERNAL"

_BY_KIND: dict[str, ErrorStatus] = {row.kind.kind: row for row in TABLE}
# The way back when no (trusted) kind name came: the first row of a status is its plain meaning.
_BY_HTTP: dict[int, type[errors.StratusError]] = {}
_BY_GRPC: dict[str, type[errors.StratusError]] = {}
for _row in reversed(TABLE):
    _BY_HTTP[_row.http] = _row.kind
    _BY_GRPC[_row.grpc] = _row.kind
# 422 without a kind name is the web framework's request validation, plain bad input.
_BY_HTTP[422] = errors.InvalidInput
_BY_GRPC["RESOURCE_EXHAUSTED"] = errors.RateLimited
_BY_GRPC["INVALID_ARGUMENT"] = errors.InvalidInput
_BY_GRPC["UNAVAILABLE"] = errors.NotReady
# Statuses other servers (and gRPC itself) use for the same meanings.
_BY_GRPC["FAILED_PRECONDITION"] = errors.Conflict
_BY_GRPC["ABORTED"] = errors.Conflict
_BY_GRPC["OUT_OF_RANGE"] = errors.InvalidInput


def _row_for(error: BaseException | type[BaseException]) -> ErrorStatus | None:
    cls = error if isinstance(error, type) else type(error)
    for row in TABLE:
        if issubclass(cls, row.kind):
            return row
    return None


def status_for(error: BaseException | type[BaseException]) -> int:
    """The HTTP status for an error (or error class): 500 for anything that is not a StratusError."""
    row = _row_for(error)
    return row.http if row is not None else INTERNAL_HTTP


def grpc_code_for(error: BaseException | type[BaseException]) -> str:
    """The ``grpc.StatusCode`` name for an error (or error class): INTERNAL for anything else."""
    row = _row_for(error)
    return row.grpc if row is not None else INTERNAL_GRPC


def grpc_number(code: str) -> int:
    """The number of a ``grpc.StatusCode`` name (UNKNOWN's for a name that is none)."""
    return GRPC_CODES.get(code, GRPC_CODES["UNKNOWN"])


def kind_for(error: BaseException | type[BaseException]) -> str:
    """The kind name sent next to the status (``errors.StratusError.kind``); "internal" for other errors."""
    row = _row_for(error)
    cls = error if isinstance(error, type) else type(error)
    return cls.kind if row is not None and issubclass(cls, errors.StratusError) else "internal"


def _make(kind: type[errors.StratusError], message: str, retry_after_s: float | None) -> errors.StratusError:
    if kind is errors.RateLimited and retry_after_s is not None:
        return errors.RateLimited(message, retry_after_s)
    return kind(message)


def error_for_status(
    status: int, message: str, kind: str | None = None, *, retry_after_s: float | None = None
) -> errors.StratusError:
    """The error kind an HTTP error status means. ``kind`` is the name the server sent with it
    (``KIND_HEADER``); it is used when the table gives it the same status. Unknown statuses: StratusError."""
    row = _BY_KIND.get(kind) if kind else None
    if row is not None and row.http == status:
        return _make(row.kind, message, retry_after_s)
    return _make(_BY_HTTP.get(status, errors.StratusError), message, retry_after_s)


def error_for_grpc_code(code: str | int, message: str, kind: str | None = None) -> errors.StratusError:
    """The error kind a gRPC status code (name or number) means, with the same use of ``kind``
    (``KIND_METADATA_KEY``) as ``error_for_status``."""
    name = _GRPC_NAMES.get(code, "UNKNOWN") if isinstance(code, int) else code
    row = _BY_KIND.get(kind) if kind else None
    if row is not None and row.grpc == name:
        return row.kind(message)
    return _BY_GRPC.get(name, errors.StratusError)(message)
