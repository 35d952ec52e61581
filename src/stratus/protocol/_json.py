"""Parsing a JSON object out of a request body, with the one error message every adapter gives."""

from __future__ import annotations

from typing import Any

import orjson

from stratus.errors import InvalidInput


def json_object(body: bytes | memoryview, expected: str = "a JSON object") -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput(f"request body must be {expected}")
    return payload
