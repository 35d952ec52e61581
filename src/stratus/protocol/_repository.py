"""The model repository extension's one rule on load and unload parameters, for every transport: a request
names at most a registered version (number or alias), never a file, config or URL, so no request can make
the server read or fetch a location it names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stratus.errors import InvalidInput


def repository_version(parameters: Mapping[str, Any], allowed: tuple[str, ...] = ("version",)) -> str | None:
    """The version or alias a load/unload request's ``parameters`` name (None: the default one); any
    parameter not in ``allowed`` is refused."""
    unknown = [k for k in parameters if k not in allowed]
    if unknown:
        raise InvalidInput(
            "only a registered 'version' (number or alias) can be loaded; refusing parameter(s) "
            + ", ".join(repr(k) for k in unknown)
            + ": register the model first, then load it by name"
        )
    version = parameters.get("version")
    if isinstance(version, float) and version.is_integer():
        version = int(version)  # JSON has one number type: 3.0 is the version 3
    return None if version is None else str(version)
