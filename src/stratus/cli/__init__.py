"""The `stratus` command line (Typer + Rich).

The commands load when the command line runs, not when a module under stratus.cli is imported: a replica
(``python -m stratus.cli.endpoint_server``) imports this package first, and must not load the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stratus.cli.app import app


def main() -> None:
    from stratus.cli.app import app

    app()


def __getattr__(name: str) -> Any:
    if name == "app":
        from stratus.cli.app import app

        return app
    raise AttributeError(name)


__all__ = ["app", "main"]
