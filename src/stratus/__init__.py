"""Stratus: self-hosted Model-as-a-Service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stratus.version import __version__

if TYPE_CHECKING:
    from stratus.sdk import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import stratus` stays cheap for the server and the CLI.
    if name == "Client":
        from stratus.sdk import Client

        return Client
    raise AttributeError(name)
