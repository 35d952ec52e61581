"""Which artifact store a setting names: ``STRATUS_ARTIFACTS`` (a local folder, or ``s3://bucket/prefix``)."""

from __future__ import annotations

from pathlib import Path

from stratus.security.encryption import Keyring
from stratus.store.artifacts import Artifacts, ArtifactStore


def open_artifacts(location: str | Path, keyring: Keyring, *, gc_grace_seconds: float = 3600.0) -> Artifacts:
    """The store a location names: ``s3://bucket/prefix`` (S3-compatible, through boto3's usual settings)
    or a local folder."""
    if isinstance(location, str) and location.startswith("s3://"):
        from stratus.store.s3 import S3ArtifactStore  # boto3 loads only when S3 is used

        return S3ArtifactStore.from_url(location, keyring, gc_grace_seconds=gc_grace_seconds)
    return ArtifactStore(Path(location), keyring)
