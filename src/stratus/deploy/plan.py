"""What the controller's parts share: the plan of one endpoint revision, the slot an endpoint occupies
while it lives, and the recorder they report to."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from stratus.deploy.router import LiveEndpoint
from stratus.deploy.spec import CanarySpec, ScalingSpec
from stratus.registry.records import VersionInfo


class Recorder(Protocol):
    """Where the controller writes what happened (the endpoint service, into the metadata DB)."""

    def event(self, endpoint_id: int, kind: str, revision: int | None, detail: dict[str, object]) -> None: ...
    def revision_done(self, endpoint_id: int, revision: int, status: str, message: str) -> None: ...


@dataclass(frozen=True)
class Plan:
    """One revision of an endpoint, with targets pinned to versions."""

    endpoint_id: int
    project: str
    name: str
    revision: int
    targets: list[tuple[VersionInfo, int]]
    shadows: list[VersionInfo]
    sticky_header: str | None
    scaling: ScalingSpec
    rollout: str
    canary: CanarySpec

    @property
    def key(self) -> tuple[str, str]:
        return self.project, self.name


@dataclass(eq=False)
class Slot:
    """One endpoint's place in the controller: what serves (``live``), the plan it serves under (its
    scaling), and the lock that keeps its rollouts one at a time. Replaced fields, never shared maps."""

    key: tuple[str, str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    live: LiveEndpoint | None = None
    plan: Plan | None = None
    rolling: bool = False
