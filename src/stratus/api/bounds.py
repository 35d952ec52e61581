"""Bounded types for every value that reaches the control plane: request models, query, path and header
parameters use these, so a new route inherits the bounds instead of re-deciding them case by case.

Why each bound exists:
  - integers are stored in SQLite (signed 64-bit): anything wider overflows inside the database driver,
    so every integer is within int64 AND within the sane maximum of what it counts;
  - floats must be finite and below the setting's sane maximum (a rate of 1e308 requests/s is a typo);
  - moments are normalised to naive UTC, the store's representation; a valid RFC 3339 time whose UTC
    value falls outside Python's years 1-9999 (``0001-01-01T00:00:00+14:00``) is clamped to the
    earliest/latest representable time, which selects exactly the same rows;
  - names and version references are checked by the services (400 with their message); the same patterns
    are published in the schema, so a schema-valid request is an accepted one;
  - body values are strict: JSON ``true`` is not the integer 1 and ``"5"`` is not a number.

tests/security/test_schema_bounds.py walks the published schema and fails on an unbounded integer, number
or string, so a route that forgets these types is caught.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from annotated_types import Interval
from pydantic import AfterValidator, AllowInfNan, BeforeValidator, Strict, StringConstraints, WithJsonSchema

from stratus.registry.names import MAX_VERSION_DIGITS, NAME_PATTERN, TASKS
from stratus.security.ratelimit import MAX_MONTHLY_ITEMS, MAX_RATE_LIMIT_RPS
from stratus.security.scopes import SCOPES

INT64_MAX = 2**63 - 1
#: The largest integer every JSON client holds exactly (IEEE doubles): per-field maxima stay at or below it,
#: and schema tools, which read bounds as doubles, generate exactly the values the server accepts.
JSON_SAFE_MAX = 2**53 - 1
#: Versions are counted from 1; at most 15 digits (stratus.registry.names), so the bound is also a pattern.
MAX_VERSION = 10**MAX_VERSION_DIGITS - 1
MAX_TEXT_LENGTH = 10_000

# -- names and references (mirror stratus.registry.names and stratus.security.keys) ----------------------

PROJECT_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
#: A name that is not all digits (an alias); "latest" is reserved and refused where an alias is set.
ALIAS_PATTERN = r"^(?:[0-9]+[a-z_-]|[a-z])[a-z0-9_-]{0,62}$"
VERSION_PATTERN = rf"^[1-9][0-9]{{0,{MAX_VERSION_DIGITS - 1}}}$"
#: A version number, an alias or ``latest``.
VERSION_REF_PATTERN = rf"^(?:[1-9][0-9]{{0,{MAX_VERSION_DIGITS - 1}}}|(?:[0-9]+[a-z_-]|[a-z])[a-z0-9_-]{{0,62}})$"
KEY_ID_PATTERN = r"^[0-9a-f]{12}$"
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"


def _documented(**schema: Any) -> WithJsonSchema:
    """A rule the service checks itself (answering 400 with its own message), stated in the schema too."""
    return WithJsonSchema({"type": "string", **schema})


Name = Annotated[str, _documented(pattern=NAME_PATTERN, maxLength=64)]
ProjectName = Annotated[str, _documented(pattern=PROJECT_PATTERN, maxLength=63)]
Alias = Annotated[str, _documented(pattern=ALIAS_PATTERN, maxLength=64)]
#: Where an alias is set: "latest" is reserved.
NewAlias = Annotated[str, _documented(pattern=ALIAS_PATTERN, maxLength=64, **{"not": {"const": "latest"}})]
VersionRef = Annotated[str, _documented(pattern=VERSION_REF_PATTERN, maxLength=64)]
KeyId = Annotated[str, _documented(pattern=KEY_ID_PATTERN, maxLength=12)]
JobId = Annotated[str, _documented(pattern=JOB_ID_PATTERN, maxLength=32)]
Task = Annotated[str, _documented(enum=list(TASKS))]
#: Filters in a query string are checked here (422): a filter that cannot match would otherwise answer an
#: empty list for a value the schema calls invalid.
ProjectFilter = Annotated[str, StringConstraints(pattern=PROJECT_PATTERN, max_length=63)]
KeyIdFilter = Annotated[str, StringConstraints(pattern=KEY_ID_PATTERN, max_length=12)]
Segment = Annotated[str, StringConstraints(min_length=1, max_length=255)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_LENGTH)]

# -- numbers ----------------------------------------------------------------------------------------------


def _json_integer(value: Any) -> Any:
    """A JSON Schema integer: an int, or a number with no fraction (``5.0``); never ``true`` or ``"5"``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("expected an integer, got a fraction")
        return int(value)
    return value


#: A version number in a path or form field (parsed from text, so not strict).
VersionNumber = Annotated[int, Interval(ge=1, le=MAX_VERSION)]
#: A non-negative position (a sequence number, an offset) in a query string.
Position = Annotated[int, Interval(ge=0, le=JSON_SAFE_MAX)]
#: Requests per second in a JSON body; 0 means unlimited.
RateLimit = Annotated[float, Strict(), AllowInfNan(False), Interval(ge=0, le=MAX_RATE_LIMIT_RPS)]
#: Inferred items per month in a JSON body; 0 means unlimited.
MonthlyItems = Annotated[int, Interval(ge=0, le=MAX_MONTHLY_ITEMS), BeforeValidator(_json_integer)]
# The validator comes last: it runs first, and the bounds stay on the int schema (and in the JSON schema).
BodyVersion = Annotated[int, Interval(ge=1, le=MAX_VERSION), BeforeValidator(_json_integer)]

# -- enumerations -------------------------------------------------------------------------------------------

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Scope = Annotated[str, _documented(enum=list(SCOPES))]
#: Python's \w (Unicode), as the key service matches it; hypothesis-based tools read patterns the same way.
KeyName = Annotated[str, _documented(pattern=r"^[\w .:@-]{0,64}$", maxLength=64)]

# -- moments ------------------------------------------------------------------------------------------------

_MOMENT_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[Tt ][0-9:.]+(?:[Zz]|[+-]\d{2}:?\d{2})?)?")


def _moment_text(value: Any) -> Any:
    """Only ISO 8601 text is a moment: pydantic would also read ``0.5`` or ``12345`` as Unix times."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or len(value) > 64 or not _MOMENT_SHAPE.fullmatch(value):
        raise ValueError("expected an ISO 8601 date or date-time, such as 2026-01-31 or 2026-01-31T12:00:00Z")
    return value


def _naive_utc(moment: datetime) -> datetime:
    """The store keeps naive UTC; a moment whose UTC value Python cannot hold is clamped to the nearest end."""
    if moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        return datetime.min if moment.year == 1 else datetime.max


#: A date or date-time in a query string: ISO 8601, any UTC offset, no offset meaning UTC.
Moment = Annotated[
    datetime,
    BeforeValidator(_moment_text),
    AfterValidator(_naive_utc),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}],
            "description": "ISO 8601 date or date-time; without an offset it is UTC",
        }
    ),
]


def parse_int64_text(text: str, what: str, *, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    """A decimal integer from a header or a path segment, judged by its digits before Python converts it
    (int() of a 5,000-digit string raises, and values past int64 overflow the database)."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(maximum)) or not minimum <= int(text) <= maximum:
        raise ValueError(f"{what} must be an integer from {minimum} to {maximum}, got {text[:40]!r}")
    return int(text)
