"""The SDK client every CLI command talks through, with the key given by the global --api-key option."""

from __future__ import annotations

from typing import Any

_options: dict[str, str | None] = {"api_key": None}


def set_api_key(key: str | None) -> None:
    _options["api_key"] = key


def client(url: str | None) -> Any:
    from stratus.sdk import Client

    # None lets the SDK look for STRATUS_API_KEY, then the local server's admin key file.
    return Client(url, api_key=_options["api_key"])
