"""The `stratus` command line (Typer + Rich)."""

from stratus.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
