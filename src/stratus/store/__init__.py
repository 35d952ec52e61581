"""Metadata DB and artifact store."""

from stratus.store.artifacts import DIGEST_PREFIX, ArtifactStore, StoredArtifact
from stratus.store.db import Database, alembic_config

__all__ = ["DIGEST_PREFIX", "ArtifactStore", "Database", "StoredArtifact", "alembic_config"]
