"""Validation of user-chosen names. Names are labels in the DB only; no path is ever built from one."""

from __future__ import annotations

import re

from stratus.errors import InvalidInput

#: Also published in the OpenAPI schema (stratus.api.bounds), so the schema and the check agree.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_NAME = re.compile(NAME_PATTERN.strip("^$"))
#: Version numbers have at most 15 digits: every one is a JSON-safe integer (below 2**53) inside SQLite's
#: int64, and int() never sees a huge string.
MAX_VERSION_DIGITS = 15
TASKS = ("classification", "regression", "embedding", "other")


def check_name(name: str, what: str = "model name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid {what} {name!r}: use 1 to 64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    check_name(alias, "alias")
    if alias.isdigit():
        raise InvalidInput(f"invalid alias {alias!r}: an alias cannot be all digits (that is a version)")
    if alias == "latest":
        raise InvalidInput("'latest' is reserved: it always means the newest active version")
    return alias


def check_task(task: str) -> str:
    if task not in TASKS:
        raise InvalidInput(f"invalid task {task!r}: expected one of {', '.join(TASKS)}")
    return task


def parse_version_ref(ref: str | int | None) -> int | str | None:
    """A version reference is a positive integer, an alias name, 'latest', or None (the default)."""
    if ref is None or isinstance(ref, int):
        if isinstance(ref, int) and not 1 <= ref < 10**MAX_VERSION_DIGITS:
            raise InvalidInput(
                f"invalid version {ref}: versions start at 1 and have at most {MAX_VERSION_DIGITS} digits"
            )
        return ref
    if ref.isascii() and ref.isdigit():
        if len(ref) > MAX_VERSION_DIGITS:
            raise InvalidInput(f"invalid version {ref[:40]!r}: a version has at most {MAX_VERSION_DIGITS} digits")
        number = int(ref)
        if number < 1:
            raise InvalidInput(f"invalid version {ref!r}: versions start at 1")
        return number
    if ref == "latest":
        return ref
    return check_name(ref, "version or alias")
