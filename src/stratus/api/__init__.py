"""HTTP adapters only: each protocol maps requests onto the services of a host (api/host.py).

``create_app`` (the full server) is the wiring module's, stratus.platform; it is reachable from here for
callers that import it by its old place, and only loaded when asked for, so importing an adapter (a
replica's api.serving) loads no control plane.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stratus.platform import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from stratus.platform import create_app

        return create_app
    raise AttributeError(name)
