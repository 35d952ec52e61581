"""How the CLI prints: Rich tables for people, JSON for scripts, errors on stderr with exit code 1."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from stratus.errors import StratusError

# Piped output gets a wide virtual terminal, so tables are not squeezed into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def show(value: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        print_json(value)
    else:
        render(value)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn the platform's errors and connection failures into one readable line and exit code 1."""
    import httpx

    try:
        yield
    except StratusError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(1) from None
    except httpx.TransportError as exc:
        err_console.print(f"[red]error:[/red] cannot reach the server: {exc}", highlight=False)
        raise typer.Exit(1) from None
