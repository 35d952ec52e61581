"""Model registry: models, versions, aliases, signatures, lineage."""

from stratus.registry.names import TASKS, check_alias, check_name, parse_version_ref
from stratus.registry.records import ModelInfo, VersionInfo
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
