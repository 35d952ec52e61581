"""The single-endpoint mode's routing: an exported endpoint's targets all run in this process, and each
request goes to one of them by traffic weight (or by the sticky header)."""

from __future__ import annotations

from stratus import tenancy
from stratus.dataplane import DataPlane
from stratus.deploy.bundle import BundleCatalog
from stratus.deploy.router import pick_weighted
from stratus.registry.records import VersionInfo
from stratus.types import Tensor


class BundledEndpoint:
    def __init__(self, catalog: BundleCatalog, plane: DataPlane, sticky_header: str | None = None) -> None:
        self.name = catalog.endpoint
        self._plane = plane
        self._sticky = sticky_header
        routes = [r for r in catalog.routes if r.weight > 0]
        self._versions = [catalog.get_version(r.model, r.version) for r in routes]
        self._shares = [float(r.weight) for r in routes]

    def find(self, name: str) -> BundledEndpoint | None:
        return self if name == self.name else None

    def names(self) -> list[str]:
        return [self.name]

    def versions(self) -> list[VersionInfo]:
        order = sorted(range(len(self._versions)), key=lambda i: -self._shares[i])
        return [self._versions[i] for i in order]

    def ready(self) -> bool:
        loaded = {m.key for m in self._plane.pool.loaded()}
        return all(v.id in loaded for v in self._versions)

    async def infer(
        self, inputs: dict[str, Tensor], outputs: list[str] | None, timeout_ms: float | None
    ) -> tuple[VersionInfo, dict[str, Tensor]]:
        key = tenancy.request_headers().get(self._sticky) if self._sticky else None
        version = self._versions[pick_weighted(self._shares, key)]
        return version, await self._plane.run_version(version, inputs, outputs, timeout_ms)
