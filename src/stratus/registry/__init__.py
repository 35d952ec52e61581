"""Model registry: models, versions, aliases, signatures, lineage.

The service (a database) loads only when asked for: the records and names are what a replica's data plane
needs, and importing them must not bring SQLAlchemy into its process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stratus.registry.names import TASKS, check_alias, check_name, parse_version_ref
from stratus.registry.records import ModelInfo, VersionInfo

if TYPE_CHECKING:
    from stratus.registry.service import DEFAULT_ALIAS, DEFAULT_PROJECT, RegistryService

__all__ = [
    "DEFAULT_ALIAS",
    "DEFAULT_PROJECT",
    "TASKS",
    "ModelInfo",
    "RegistryService",
    "VersionInfo",
    "check_alias",
    "check_name",
    "parse_version_ref",
]

_FROM_SERVICE = ("DEFAULT_ALIAS", "DEFAULT_PROJECT", "RegistryService")


def __getattr__(name: str) -> Any:
    if name in _FROM_SERVICE:
        from stratus.registry import service

        return getattr(service, name)
    raise AttributeError(name)
