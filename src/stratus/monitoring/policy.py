"""What the inference log keeps, per model and per endpoint: off, a sampled share, or all requests, with or
without their payloads. Read on every request, so the table is held in memory: changes made here apply at
once, changes made by another server sharing the DB within ``refresh_seconds``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, select

from stratus.errors import InvalidInput
from stratus.store import Database
from stratus.store.tables import LogSetting, utcnow

Mode = Literal["off", "sampled", "all"]
Scope = Literal["model", "endpoint"]
MODES: tuple[Mode, ...] = ("off", "sampled", "all")
SCOPES: tuple[Scope, ...] = ("model", "endpoint")


@dataclass(frozen=True, slots=True)
class LogPolicy:
    mode: Mode = "off"
    rate: float = 1.0  #: share of requests kept when sampled (0-1]
    payloads: bool = False  #: keep the input and output tensors, masked

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidInput(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not 0.0 < self.rate <= 1.0:
            raise InvalidInput(f"rate must be more than 0 and at most 1, not {self.rate}")

    @property
    def share(self) -> float:
        """The share of requests kept: 0 when off, 1 for all."""
        return 0.0 if self.mode == "off" else 1.0 if self.mode == "all" else self.rate

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "rate": self.rate, "payloads": self.payloads}


OFF = LogPolicy()


class LogSettings:
    """Per (project, scope, name) policies, with a default for everything unset."""

    def __init__(self, db: Database, default: LogPolicy = OFF, refresh_seconds: float = 2.0) -> None:
        self.db = db
        self.default = default
        self._refresh = refresh_seconds
        self._table: dict[tuple[str, str, str], LogPolicy] = {}
        self._loaded_at = -1e18
        self._lock = threading.Lock()

    def load(self) -> None:
        with self.db.read() as s:
            rows = list(s.scalars(select(LogSetting)))
        self._table = {
            (r.project, r.scope, r.name): LogPolicy(r.mode, r.rate, r.payloads)  # type: ignore[arg-type]
            for r in rows
        }
        self._loaded_at = time.monotonic()

    def refresh_if_stale(self) -> None:
        """Called off the hot path (the log's writer thread)."""
        if time.monotonic() - self._loaded_at >= self._refresh:
            self.load()

    def effective(self, project: str, model: str, endpoint: str) -> LogPolicy:
        """The policy of one request: its endpoint's if set, else its model's, else the default."""
        table = self._table
        if endpoint:
            policy = table.get((project, "endpoint", endpoint))
            if policy is not None:
                return policy
        return table.get((project, "model", model), self.default)

    def get(self, project: str, scope: Scope, name: str) -> tuple[LogPolicy, str]:
        """The policy set for a model or endpoint and where it comes from ("model"/"endpoint" or "default")."""
        policy = self._table.get((project, scope, name))
        return (policy, scope) if policy is not None else (self.default, "default")

    def set(self, project: str, scope: Scope, name: str, policy: LogPolicy | None) -> None:
        """Set a policy, or with None go back to the default."""
        with self._lock, self.db.write() as s:
            s.execute(
                delete(LogSetting).where(
                    LogSetting.project == project, LogSetting.scope == scope, LogSetting.name == name
                )
            )
            if policy is not None:
                s.add(
                    LogSetting(
                        project=project,
                        scope=scope,
                        name=name,
                        mode=policy.mode,
                        rate=policy.rate,
                        payloads=policy.payloads,
                        updated_at=utcnow(),
                    )
                )
        table = dict(self._table)
        if policy is None:
            table.pop((project, scope, name), None)
        else:
            table[(project, scope, name)] = policy
        self._table = table  # swapped whole: the hot path reads without a lock
