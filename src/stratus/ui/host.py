"""What the console needs from the server it runs in: the control routes' services plus the console sessions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from stratus.api.host import ControlHost

if TYPE_CHECKING:
    from stratus.security.sessions import ConsoleSessions


class ConsoleHost(ControlHost, Protocol):
    @property
    def sessions(self) -> ConsoleSessions: ...
