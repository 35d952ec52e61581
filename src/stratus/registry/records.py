"""Plain, immutable views of registry rows that services hand to adapters (no ORM objects leak out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

from stratus.types import Signature

if TYPE_CHECKING:  # rows are converted here, but a replica's catalog (a bundle) has no database
    from stratus.store.tables import Model, ModelVersion


class VersionMeta(TypedDict, total=False):
    """What a registration may say about the new version besides its content."""

    version: int | None
    description: str
    metrics: dict[str, Any]
    params: dict[str, Any]
    config: dict[str, Any]
    parent_version: int | None
    dataset: str | None
    source: str | None
    create_model: bool
    task: str
    model_description: str
    tags: dict[str, Any]


@dataclass(frozen=True)
class VersionInfo:
    id: int
    model: str
    version: int
    digest: str
    size_bytes: int
    format: str
    signature: Signature
    metrics: dict[str, Any]
    params: dict[str, Any]
    config: dict[str, Any]
    parent_version: int | None
    dataset: str | None
    source: str | None
    description: str
    status: str
    health: str
    health_reason: str
    created_at: datetime
    aliases: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: ModelVersion, model_name: str, aliases: tuple[str, ...] = ()) -> VersionInfo:
        return cls(
            id=row.id,
            model=model_name,
            version=row.version,
            digest=row.digest,
            size_bytes=row.size_bytes,
            format=row.format,
            signature=Signature.from_dict(row.signature),
            metrics=dict(row.metrics),
            params=dict(row.params),
            config=dict(row.config),
            parent_version=row.parent_version,
            dataset=row.dataset,
            source=row.source,
            description=row.description,
            status=row.status,
            health=row.health,
            health_reason=row.health_reason,
            created_at=row.created_at,
            aliases=aliases,
            files={f.name: f.digest for f in row.files},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "digest": self.digest,
            "size_bytes": self.size_bytes,
            "format": self.format,
            "signature": self.signature.to_dict(),
            "metrics": self.metrics,
            "params": self.params,
            "config": self.config,
            "lineage": {
                "parent_version": self.parent_version,
                "dataset": self.dataset,
                "source": self.source,
                # A compressed variant: how it was made from its parent.
                **(
                    {"method": self.params["compression_method"], "method_params": self.params["compression_params"]}
                    if "compression_method" in self.params
                    else {}
                ),
                # A federated version: the federation that trained it (clients, rounds, strategy), never their data.
                **({"federation": self.params["federation"]} if "federation" in self.params else {}),
            },
            "description": self.description,
            "status": self.status,
            "health": self.health,
            "health_reason": self.health_reason,
            "aliases": list(self.aliases),
            "files": dict(sorted(self.files.items())),
            "created_at": self.created_at.isoformat() + "Z",
        }


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    task: str
    tags: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    versions: tuple[int, ...] = ()
    aliases: dict[str, int] = field(default_factory=dict)
    allow_download: bool = True

    @classmethod
    def from_row(cls, row: Model) -> ModelInfo:
        by_id = {v.id: v.version for v in row.versions}
        return cls(
            name=row.name,
            description=row.description,
            task=row.task,
            tags=dict(row.tags),
            created_at=row.created_at,
            updated_at=row.updated_at,
            versions=tuple(v.version for v in row.versions),
            aliases={a.name: by_id[a.version_id] for a in row.aliases if a.version_id in by_id},
            allow_download=row.allow_download,
        )

    @property
    def latest_version(self) -> int | None:
        return max(self.versions) if self.versions else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "task": self.task,
            "tags": self.tags,
            "versions": list(self.versions),
            "latest_version": self.latest_version,
            "aliases": self.aliases,
            "allow_download": self.allow_download,
            "created_at": self.created_at.isoformat() + "Z",
            "updated_at": self.updated_at.isoformat() + "Z",
        }
