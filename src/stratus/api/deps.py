"""Access to the platform's services from a request. Handlers get services, never globals."""

from __future__ import annotations

from starlette.requests import Request

from stratus.dataplane import DataPlane
from stratus.platform import Platform
from stratus.registry import RegistryService


def platform(request: Request) -> Platform:
    result: Platform = request.app.state.platform
    return result


def dataplane(request: Request) -> DataPlane:
    return platform(request).dataplane


def registry(request: Request) -> RegistryService:
    return platform(request).registry
