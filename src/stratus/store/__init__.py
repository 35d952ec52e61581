"""Metadata DB and artifact store."""

from stratus.store.artifacts import DIGEST_PREFIX, Artifacts, ArtifactStore, StoredArtifact
from stratus.store.db import Database, alembic_config
from stratus.store.location import open_artifacts

__all__ = [
    "DIGEST_PREFIX",
    "ArtifactStore",
    "Artifacts",
    "Database",
    "StoredArtifact",
    "alembic_config",
    "open_artifacts",
]
