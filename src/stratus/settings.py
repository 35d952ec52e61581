"""Every setting of the platform, in one place. Each field is read from an env var STRATUS_<NAME>."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRATUS_", extra="ignore")

    home: Path = Field(
        default=Path("~/.stratus"),
        description="Folder that holds everything the server stores: metadata DB, artifacts, caches.",
    )
    host: str = Field(default="127.0.0.1", description="Interface the server binds to. Loopback by default.")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port the server listens on.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Extra Host header values to accept (JSON list). On loopback only localhost, 127.0.0.1 and "
        "[::1] with the server's port are accepted, against DNS rebinding.",
    )
    insecure: bool = Field(
        default=False,
        description="Allow binding to a non-loopback interface although the API has no authentication yet.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata DB. Default: SQLite in WAL mode at HOME/stratus.db.",
    )
    url: str = Field(
        default="http://127.0.0.1:8080",
        description="Server URL that the CLI and SDK talk to.",
    )
    samples: bool = Field(default=True, description="Register the bundled sample models (iris, digits) on first start.")
    sample_cache_dir: Path | None = Field(
        default=None,
        description="Where built sample models are cached. Default: HOME/cache/samples.",
    )
    intra_op_threads: int = Field(
        default_factory=_default_threads,
        ge=1,
        le=256,
        description="ONNX Runtime intra-op threads per model session. Default: the number of CPU cores.",
    )
    max_loaded_bytes: int = Field(
        default=0,
        ge=0,
        description="Memory budget for loaded models (bytes of ONNX per instance); idle models are "
        "evicted least-recently-used first when it is exceeded. 0 means no limit.",
    )
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted by inference and JSON endpoints (413 above it).",
    )
    max_upload_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1024,
        description="Largest model upload accepted by the control plane (413 above it).",
    )
    job_slots: int = Field(default=1, ge=1, le=64, description="Training and compression jobs that run at once.")
    job_threads: int = Field(
        default_factory=_default_threads, ge=1, le=256, description="CPU threads each job's process may use."
    )
    log_level: str = Field(default="info", description="Log level: debug, info, warning or error.")

    @field_validator("home", "sample_cache_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error"}:
            raise ValueError("log_level must be debug, info, warning or error")
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'stratus.db'}"

    @property
    def artifact_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def resolved_sample_cache_dir(self) -> Path:
        return self.sample_cache_dir or self.home / "cache" / "samples"
