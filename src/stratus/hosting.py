"""What a protocol adapter (the HTTP API, the gRPC service) needs from the server it runs in, as protocols:
the data plane, the access check and the audit log. The full server (stratus.platform.Platform) and a
replica's single-endpoint host (api/serving.py) both provide them, so no adapter imports the wiring module
and a replica hosts the inference routes without the control plane. api/host.py adds what only the control
routes need (``ControlHost``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from stratus.tenancy import Caller

if TYPE_CHECKING:
    from stratus.dataplane import DataPlane


class Access(Protocol):
    def authenticate(self, token: str | None, required: str) -> tuple[Caller, float | None]: ...
    def authorize(
        self, caller: Caller, key_rps: float | None, required: str, *, counts_items: bool = False
    ) -> None: ...


class Audit(Protocol):
    def record(
        self, caller: Caller | None, action: str, target: str, address: str, status: int, detail: str = ""
    ) -> None: ...


class Host(Protocol):
    @property
    def dataplane(self) -> DataPlane: ...
    @property
    def access(self) -> Access: ...
    @property
    def audit(self) -> Audit: ...
    @property
    def started(self) -> bool: ...
