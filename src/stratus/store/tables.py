"""ORM tables of the metadata store. Schema changes go through an Alembic migration in migrations/."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # None: the server-wide default from settings applies.
    rate_limit_rps: Mapped[float | None] = mapped_column(Float, nullable=True)
    monthly_item_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_models_project_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    task: Mapped[str] = mapped_column(String(32), default="other")
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    allow_download: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ModelVersion.version",
    )
    aliases: Mapped[list[Alias]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True, order_by="Alias.name"
    )


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_versions_model_version"),
        Index("ix_model_versions_dataset", "dataset"),  # the versions trained on a dataset (its console page)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(80), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(32), default="onnx")
    signature: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parent_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dataset: Mapped[str | None] = mapped_column(String(200), nullable=True)
    source: Mapped[str | None] = mapped_column(String(200), nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    health: Mapped[str] = mapped_column(String(16), default="healthy")
    health_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    model: Mapped[Model] = relationship(back_populates="versions")
    files: Mapped[list[VersionFile]] = relationship(
        back_populates="version", cascade="all, delete-orphan", passive_deletes=True, order_by="VersionFile.name"
    )


class VersionFile(Base):
    """Further artifacts of a version: a pipeline's encoder and tokenizer, a confusion-matrix plot.

    ``name`` is a label chosen by the platform or validated from the upload; it never becomes a path.
    """

    __tablename__ = "version_files"
    __table_args__ = (UniqueConstraint("version_id", "name", name="uq_version_files_version_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(80), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    media_type: Mapped[str] = mapped_column(String(100), default="application/octet-stream")

    version: Mapped[ModelVersion] = relationship(back_populates="files")


class Alias(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("model_id", "name", name="uq_aliases_model_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    model: Mapped[Model] = relationship(back_populates="aliases")
    target: Mapped[ModelVersion] = relationship()


class Dataset(Base):
    """An immutable, content-addressed dataset with its inferred schema and statistics profile."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_datasets_project_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(80), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    task: Mapped[str] = mapped_column(String(32))
    rows: Mapped[int] = mapped_column(Integer)
    schema: Mapped[dict[str, Any]] = mapped_column(default=dict)
    profile: Mapped[dict[str, Any]] = mapped_column(default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """A training or compression job. Its state moves queued -> running -> succeeded|failed|cancelled."""

    __tablename__ = "jobs"
    #: A project's jobs newest first, a page at a time (the console's lists), without sorting them all.
    __table_args__ = (Index("ix_jobs_project_created", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str] = mapped_column(Text, default="")
    model_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    timeout_s: Mapped[int] = mapped_column(Integer, default=3600)
    cpu_seconds: Mapped[float] = mapped_column(default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    #: The server running it (its instance id) and when that server last said so. On a shared DB (several servers)
    #: a running job is re-queued or failed by another server only once this heartbeat is stale.
    runner: Mapped[str | None] = mapped_column(String(32), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Lease(Base):
    """A lease held by one server at a time (``endpoint-control``), on the DB's clock: servers on a shared DB
    renew it well before ``expires_at``; another takes it over once it has expired. ``epoch`` counts takeovers."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(default=utcnow)


class EndpointRoutes(Base):
    """An endpoint's live routing table as the server holding endpoint control publishes it (deploy/follow.py),
    so the other servers of a shared DB route its requests to the same replicas. Replica tokens are sealed."""

    __tablename__ = "endpoint_routes"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_endpoint_routes_project_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    table: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobEvent(Base):
    """Per-epoch metrics and log lines of a job, in order (the SSE stream replays them)."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_events_job_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key ``stk_<id>_<secret>``. Only an HMAC-SHA256 of the secret (with the server's pepper) is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    rate_limit_rps: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class AuditEvent(Base):
    """One control-plane change: who (key id), what, when, from where, and the result. Rows are never updated."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    project: Mapped[str | None] = mapped_column(String(64), nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(400), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="")


class UsageRecord(Base):
    """Usage counts of one flush interval for one (project, key, model, endpoint, kind)."""

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_project_period", "project", "period_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period_start: Mapped[datetime] = mapped_column()
    project: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(32), default="")
    model: Mapped[str] = mapped_column(String(64), default="")
    endpoint: Mapped[str] = mapped_column(String(64), default="")
    kind: Mapped[str] = mapped_column(String(16), default="inference")
    requests: Mapped[int] = mapped_column(Integer, default=0)
    items: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    compute_ms: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class PayloadLogEntry(Base):
    """A masked inference request payload, kept only when payload logging is on."""

    __tablename__ = "payload_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    project: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(32), default="")
    model: Mapped[str] = mapped_column(String(64))
    protocol: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Endpoint(Base):
    """A stable name that routes inference to model versions. ``revision`` is the revision now serving."""

    __tablename__ = "endpoints"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_endpoints_project_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="deploying")
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class EndpointRevision(Base):
    """One requested configuration of an endpoint, with its targets pinned to version numbers."""

    __tablename__ = "endpoint_revisions"
    __table_args__ = (UniqueConstraint("endpoint_id", "number", name="uq_endpoint_revisions_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EndpointEvent(Base):
    """What happened to an endpoint: rollouts, traffic steps, rollbacks, scaling, replica restarts."""

    __tablename__ = "endpoint_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class LogSetting(Base):
    """What the inference log keeps of one model's or endpoint's requests (none of these rows: the default)."""

    __tablename__ = "log_settings"
    __table_args__ = (UniqueConstraint("project", "scope", "name", name="uq_log_settings_target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))  # "model" or "endpoint"
    name: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))  # "off", "sampled" or "all"
    rate: Mapped[float] = mapped_column(Float, default=1.0)
    payloads: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class InferenceLogKey(Base):
    """The data key of one written batch of inference log pages, wrapped by the master key."""

    __tablename__ = "inference_log_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wrapped: Mapped[str] = mapped_column(Text)


class InferenceLogPage(Base):
    """Records of one model (through one endpoint, or none) written together, sealed as one AES-GCM message
    bound to (project, model, endpoint). A page is one row: a crash leaves it whole or absent."""

    __tablename__ = "inference_log"
    __table_args__ = (
        Index("ix_inference_log_model", "project", "model", "last_at"),
        Index("ix_inference_log_endpoint", "project", "endpoint", "last_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(64), default="")
    first_at: Mapped[float] = mapped_column(Float)  # Unix time of its oldest record
    last_at: Mapped[float] = mapped_column(Float, index=True)
    count: Mapped[int] = mapped_column(Integer)
    key_ref: Mapped[int] = mapped_column(ForeignKey("inference_log_keys.id"))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)


class MetricsPoint(Base):
    """One interval of a model's version (scope "model") or an endpoint's (scope "endpoint") traffic, at 10 s
    or 300 s resolution. Latency is a sparse log-bucket histogram, so intervals merge into exact quantiles of
    the bucket grid at any step."""

    __tablename__ = "metrics_history"
    __table_args__ = (Index("ix_metrics_history_series", "project", "scope", "name", "resolution", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resolution: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float, index=True)  # Unix time the interval starts
    project: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    items: Mapped[int] = mapped_column(Integer, default=0)
    latency_sum: Mapped[float] = mapped_column(Float, default=0.0)
    latency: Mapped[dict[str, Any]] = mapped_column(default=dict)
    batch_rows: Mapped[int] = mapped_column(Integer, default=0)
    batch_runs: Mapped[int] = mapped_column(Integer, default=0)
    queue_sum: Mapped[float] = mapped_column(Float, default=0.0)
    replicas_sum: Mapped[float] = mapped_column(Float, default=0.0)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    dropped: Mapped[int] = mapped_column(Integer, default=0)


class AlertRule(Base):
    """A rule on one metric of one model or endpoint, its webhook, and its evaluation state."""

    __tablename__ = "alert_rules"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_alert_rules_project_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    target_kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(16))
    op: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float] = mapped_column(Float)
    for_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The webhook secret sealed by the master key (the keyring's wrapped-key JSON).
    secret: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(16), default="inactive")
    active_since: Mapped[datetime | None] = mapped_column(nullable=True)
    fired_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AlertEvent(Base):
    """A rule fired or resolved. Kept after the rule is deleted (the rule's name is copied)."""

    __tablename__ = "alert_events"
    __table_args__ = (Index("ix_alert_events_project_at", "project_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    rule_id: Mapped[str] = mapped_column(String(32))
    rule_name: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    target_kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(64))
    condition: Mapped[str] = mapped_column(String(200))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: none (no webhook), pending, delivered or failed.
    delivery: Mapped[str] = mapped_column(String(16), default="none")


class AlertDelivery(Base):
    """One attempt to deliver an event's webhook: the receiver's status, or why no answer came."""

    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("alert_events.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")


class DeviceToken(Base):
    """A one-time enrollment token for an edge device (docs/edge.md). Only its SHA-256 is kept."""

    __tablename__ = "device_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Device(Base):
    """An enrolled edge device: its key (scope ``edge``), its public key for bundle encryption, what it reported."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_devices_project_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    #: X25519 public key (base64) the device's bundles are encrypted to; empty: plain bundles.
    public_key: Mapped[str] = mapped_column(String(64), default="")
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime | None] = mapped_column(nullable=True)
    bundle: Mapped[str] = mapped_column(String(128), default="")
    health: Mapped[str] = mapped_column(String(200), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class DeviceTelemetryBatch(Base):
    """A telemetry batch already counted: a re-sent batch (the device died before it saw the answer) is not."""

    __tablename__ = "device_telemetry_batches"
    __table_args__ = (UniqueConstraint("device_id", "batch_id", name="uq_device_telemetry_batch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    batch_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    requests: Mapped[int] = mapped_column(Integer, default=0)
