"""Access to the host's services from a request. Handlers get services, never globals."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from stratus.api.host import ControlHost
from stratus.hosting import Host

if TYPE_CHECKING:
    from stratus.dataplane import DataPlane
    from stratus.registry import RegistryService


def host(request: Request) -> Host:
    """What every route may use: the data plane, access and audit (a replica has only these)."""
    result: Host = request.app.state.platform
    return result


def platform(request: Request) -> ControlHost:
    """The full server's services, for the control routes (mounted only on the full server)."""
    result: ControlHost = request.app.state.platform
    return result


def dataplane(request: Request) -> DataPlane:
    return host(request).dataplane


def registry(request: Request) -> RegistryService:
    return platform(request).registry
