"""Every setting of the platform, in one place. Each field is read from an env var STRATUS_<NAME>."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
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
    grpc_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="TCP port of the Open Inference Protocol over gRPC (on the same host as HTTP, with the same "
        "keys and TLS). 0 serves no gRPC.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Extra Host header values to accept (JSON list). On loopback only localhost, 127.0.0.1 and "
        "[::1] with the server's port are accepted, against DNS rebinding.",
    )
    insecure: bool = Field(
        default=False,
        description="Allow serving without authentication on a non-loopback interface (with --no-auth). Never "
        "needed with auth on.",
    )
    auth: bool = Field(
        default=True,
        description="Require an API key (Authorization: Bearer stk_...) on every route except /v2/health/*. "
        "Off (--no-auth) is a local single-user mode, allowed only on loopback unless insecure is set.",
    )
    admin_key_file: Path | None = Field(
        default=None,
        description="Where the bootstrap admin key is written (mode 0600) on first start. "
        "Default: HOME/admin.key. The CLI and SDK on the same machine read it when no key is given.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="API key that the CLI and SDK send. Default: the server home's admin key file, if readable.",
    )
    key_cache_seconds: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="How long a verified API key is trusted before the DB is asked again; bounds how late a "
        "revocation made by another process takes effect.",
    )
    console_session_minutes: float = Field(
        default=480,
        gt=0,
        le=7 * 24 * 60,
        description="How long a web console session (/ui) lasts after sign-in; it ends sooner on sign-out or "
        "when its API key is revoked or expires.",
    )
    tls_cert: Path | None = Field(default=None, description="PEM certificate file: serve HTTPS (with tls_key).")
    tls_key: Path | None = Field(default=None, description="PEM private key file of tls_cert.")
    master_key: SecretStr | None = Field(
        default=None,
        description="Master key (base64 of 32 bytes) that wraps the per-artifact data keys of encryption at "
        "rest. Default: read from master_key_file, which is created on first start.",
    )
    master_key_file: Path | None = Field(
        default=None,
        description="File holding the master key; must be mode 0600. Default: HOME/master.key.",
    )
    rate_limit_rps: float = Field(
        default=0,
        ge=0,
        description="Default requests per second allowed per API key (token bucket; 0 = unlimited). "
        "A key's or project's own limit overrides it.",
    )
    rate_limit_burst: int = Field(
        default=0,
        ge=0,
        description="Token bucket size for rate limits. 0 means max(1, 2 x the rate).",
    )
    monthly_item_quota: int = Field(
        default=0,
        ge=0,
        description="Default inferred items per project per calendar month (UTC); 0 = unlimited. A project's "
        "own quota overrides it.",
    )
    usage_metering: bool = Field(
        default=True,
        description="Count requests, items, tokens and compute per project, key and model. Monthly quotas "
        "rest on these counts.",
    )
    usage_flush_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Interval at which in-memory usage counts are written to the DB. A crash loses at most "
        "this interval of counts; a clean shutdown loses none.",
    )
    price_per_1k_requests: float = Field(default=0.0, ge=0, description="Price of 1,000 requests in usage reports.")
    price_per_1k_items: float = Field(default=0.0, ge=0, description="Price of 1,000 inferred items in usage reports.")
    price_per_1k_tokens: float = Field(default=0.0, ge=0, description="Price of 1,000 input tokens in usage reports.")
    price_per_cpu_hour: float = Field(default=0.0, ge=0, description="Price of one job CPU-hour in usage reports.")
    payload_log: bool = Field(
        default=False,
        description="Log every request with its payloads (masked) for each model and endpoint that has no log "
        "setting of its own (the inference log's default). Off by default: nothing is logged until asked for.",
    )
    payload_log_mask_fields: list[str] = Field(
        default_factory=list,
        description="Input or output tensor names whose values the inference log masks (JSON list), on top "
        "of the built-in patterns for emails, phone numbers and card numbers in text tensors.",
    )
    inference_log_queue: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="Records the inference log holds in memory before its writer stores them; when full, "
        "records are dropped and counted (stratus_inference_log_dropped_total), never the request.",
    )
    inference_log_flush_seconds: float = Field(
        default=0.5, gt=0, le=60, description="How often the inference log's writer stores the queued records."
    )
    inference_log_max_age_days: float = Field(
        default=7.0, gt=0, le=3650, description="Inference log records older than this are deleted."
    )
    inference_log_max_bytes: int = Field(
        default=1 << 30,
        ge=1024,
        description="Largest total size of the inference log (sealed bytes); the oldest records go first.",
    )
    metrics_history: bool = Field(
        default=True,
        description="Keep the server's own metrics history (10 s for 24 h, 5 min for 30 days) per model "
        "version and endpoint, served at /api/v1/metrics/series.",
    )
    drift_window_rows: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="Drift's default window: the last N input rows in the inference log (a request may carry "
        "several); ?last=N or ?minutes=T asks for another.",
    )
    drift_min_rows: int = Field(
        default=30, ge=1, le=100_000, description="Fewest logged rows a drift window needs to be tested."
    )
    drift_interval_seconds: float = Field(
        default=300.0,
        ge=0,
        le=86_400,
        description="How often the server computes drift (default window) for each model and endpoint whose log "
        "captures payloads, storing the drift time series and the gauges. 0: only when asked.",
    )
    drift_history_days: float = Field(
        default=30.0, gt=0, le=3650, description="Stored drift reports older than this are deleted."
    )
    explain_workers: int = Field(
        default=1, ge=1, le=64, description="Explanation worker processes (started on the first explain request)."
    )
    explain_queue: int = Field(
        default=32,
        ge=0,
        le=10_000,
        description="Explain requests that may wait for a worker; beyond workers + this, 429 at once.",
    )
    explain_timeout_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="Time limit of one explanation in a worker; over it, 504."
    )
    explain_cpu_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="The share of one core an explanation worker computes on at most: after each explanation it "
        "takes no other for a while in proportion (0.25: three times its CPU time), so a stream of explanations "
        "cannot crowd out serving. 1: no pause.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata DB. Default: SQLite in WAL mode at HOME/stratus.db. Several "
        "servers share one PostgreSQL with postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB (docs/scale-out.md).",
    )
    lease_seconds: float = Field(
        default=5.0,
        ge=1,
        le=300,
        description="On a shared PostgreSQL: how long endpoint control stays with a server that stopped renewing "
        "it (renewed every third of this); another server takes over after it. A running job whose server stopped "
        "its heartbeat for 3x this is re-queued or failed by another server.",
    )
    key_pepper: SecretStr | None = Field(
        default=None,
        description="Secret (base64 of 32 bytes) mixed into the hashes of API keys. Default: HOME/pepper.key, "
        "created on first start. Servers sharing one database must share it (and master_key).",
    )
    artifacts: str | None = Field(
        default=None,
        description="Where artifacts (sealed model files and datasets) are kept: a local folder (default "
        "HOME/artifacts), or s3://BUCKET/PREFIX for S3-compatible storage shared by several servers (endpoint and "
        "credentials from boto3's usual settings: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_REGION). See docs/scale-out.md.",
    )
    artifact_gc_grace_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="S3 artifacts only: garbage collection removes an unreferenced blob, or an interrupted upload, "
        "only once it is older than this, so it never takes what another server is writing. Keep it above twice "
        "the longest upload plus registration.",
    )
    url: str = Field(
        default="http://127.0.0.1:8080",
        description="Server URL that the CLI and SDK talk to.",
    )
    samples: bool = Field(default=True, description="Register the bundled sample models (iris, digits) on first start.")
    sample_cache_dir: Path | None = Field(
        default=None,
        description="Where built sample models are cached, shared by every home. Default: "
        "~/.cache/stratus/samples/KEY (under XDG_CACHE_HOME if set), KEY naming the versions they are built from.",
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
    automl_max_budget_s: float = Field(
        default=6 * 3600.0,
        ge=10,
        le=7 * 24 * 3600,
        description="Largest time budget an AutoML job may ask for, in seconds (400 above it).",
    )
    automl_trial_memory_mb: int = Field(
        default=2048,
        ge=64,
        le=1_048_576,
        description="Memory each AutoML trial's process may allocate beyond its start (RLIMIT_AS), in MiB; a trial "
        "over it is a failed trial. A request's trial_memory_mb overrides it.",
    )
    sequence_max_length: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Longest numeric sequence (time steps) the rnn and transformer trainers accept: a dataset whose "
        "longest sequence is over it is refused at submit (400), since every sequence is padded to the longest.",
    )
    federated_host: str = Field(
        default="127.0.0.1",
        max_length=255,
        description="Address a federated job's Flower server (its relay) binds to; loopback unless clients on other "
        "machines must reach it (then put TLS in front of it, see docs/federated.md).",
    )
    replica_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="ONNX Runtime threads of each endpoint replica process (replicas are the parallelism).",
    )
    executor: Literal["local", "ray"] = Field(
        default="local",
        description="Where training and compression jobs run: local (a child process of the server) or ray (a "
        "Ray task on the cluster at ray_address, asking for job_cpus and job_memory_mb).",
    )
    placement: Literal["local", "ray"] = Field(
        default="local",
        description="Where endpoint replicas run: local (processes of the server) or ray (Ray actors spread over "
        "the nodes of the cluster at ray_address, asking for replica_cpus and replica_memory_mb).",
    )
    ray_address: str | None = Field(
        default=None,
        description="The Ray cluster of the ray executor and placement: its GCS address (HOST:PORT, for a server "
        "on a Ray node) or a Ray Client URL (ray://HOST:10001). Ray's token authentication must be on "
        "(RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH); see docs/scale-out.md.",
    )
    job_cpus: float = Field(
        default=0, ge=0, le=256, description="CPUs a job asks Ray for (ray executor). 0: job_threads."
    )
    job_memory_mb: int = Field(
        default=0, ge=0, description="Memory a job asks Ray for, in MiB (ray executor). 0 asks for none."
    )
    replica_cpus: float = Field(
        default=0, ge=0, le=64, description="CPUs a replica asks Ray for (ray placement). 0: replica_threads."
    )
    replica_memory_mb: int = Field(
        default=0, ge=0, description="Memory a replica asks Ray for, in MiB (ray placement). 0 asks for none."
    )
    alert_eval_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="How often alert rules are evaluated: right after the metrics history closes a 10 s interval, "
        "once at least this long has passed since the last evaluation. Each evaluation judges the metric over the "
        "time since the previous one; a rule fires at the first evaluation after its condition held for its duration.",
    )
    alert_history_days: float = Field(
        default=90.0,
        gt=0,
        le=3650,
        description="Alert events (fired, resolved) and their webhook delivery attempts older than this are deleted.",
    )
    outbound_allowed_networks: list[str] = Field(
        default_factory=list,
        description="Networks (a JSON list of CIDRs such as 10.0.0.0/8) that alert webhooks may call although "
        "they are loopback, private, link-local or otherwise not public. Empty: public addresses only (SSRF guard).",
    )
    webhook_attempts: int = Field(
        default=5, ge=1, le=20, description="Attempts to deliver one alert webhook before it is marked failed."
    )
    webhook_backoff_seconds: float = Field(
        default=2.0,
        ge=0,
        le=600,
        description="Wait before the second webhook attempt; each further wait doubles (at most 10 minutes).",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="Time allowed for one webhook attempt (connect, send and answer)."
    )
    log_level: str = Field(default="info", description="Log level: debug, info, warning or error.")

    @model_validator(mode="after")
    def _check_ray(self) -> Settings:
        self.check_ray()
        return self

    def check_ray(self) -> None:
        if "ray" in (self.executor, self.placement) and not self.ray_address:
            raise ValueError("executor=ray and placement=ray need ray_address (the Ray cluster's address)")

    @field_validator(
        "home", "sample_cache_dir", "admin_key_file", "master_key_file", "tls_cert", "tls_key", mode="after"
    )
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @field_validator("outbound_allowed_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for network in value:
            ipaddress.ip_network(network.strip(), strict=False)  # a ValueError names the bad entry
        return value

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
    def resolved_admin_key_file(self) -> Path:
        return self.admin_key_file or self.home / "admin.key"

    @property
    def resolved_master_key_file(self) -> Path:
        return self.master_key_file or self.home / "master.key"

    @property
    def artifact_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def artifact_location(self) -> str | Path:
        """The artifact store: an s3:// URL, or a local folder."""
        if self.artifacts is None:
            return self.artifact_dir
        return self.artifacts if self.artifacts.startswith("s3://") else Path(self.artifacts).expanduser()

    @property
    def resolved_sample_cache_dir(self) -> Path:
        if self.sample_cache_dir is not None:
            return self.sample_cache_dir
        from stratus.samples.cache import default_cache_dir

        return default_cache_dir()
