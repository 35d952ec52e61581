"""`stratus explain MODEL --data FILE`: each row's attributions as a bar chart in the terminal."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from stratus.cli.connection import client
from stratus.cli.output import console, reported_errors, show

UrlOption = Annotated[str | None, typer.Option("--url", envvar="STRATUS_URL", help="Server URL.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of charts.")]
BAR_WIDTH = 30


def read_rows(path: Path) -> list[Any]:
    """Rows from a JSON file (a list of rows, or a V1 body's ``instances``), a .txt file (a text per line) or a
    CSV of numbers (a header row of names is skipped)."""
    text = path.read_text()
    if path.suffix.lower() == ".txt":  # one text per line (text classifiers)
        return [line for line in text.splitlines() if line.strip()]
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        rows = data["instances"] if isinstance(data, dict) else data
        if not isinstance(rows, list) or not rows:
            raise typer.BadParameter("the JSON file must hold a non-empty list of rows", param_hint="--data")
        return rows
    parsed = [line for line in csv.reader(text.splitlines()) if line]
    try:
        float(parsed[0][0])
    except (ValueError, IndexError):
        parsed = parsed[1:]  # a header
    try:
        return [[float(value) for value in line] for line in parsed]
    except ValueError as error:
        raise typer.BadParameter(f"not a CSV of numbers: {error}", param_hint="--data") from error


def bars(names: list[str], values: list[float], top: int, width: int = BAR_WIDTH) -> list[str]:
    """One line per feature, the largest |value| first: name, a bar to the left (-) or right (+), the value."""
    order = sorted(range(len(values)), key=lambda i: -abs(values[i]))[:top]
    scale = max((abs(values[i]) for i in order), default=0.0) or 1.0
    label = max((len(names[i]) for i in order), default=0)
    lines = []
    for i in order:
        size = round(abs(values[i]) / scale * width)
        left = ("█" * size).rjust(width) if values[i] < 0 else " " * width
        right = ("█" * size).ljust(width) if values[i] >= 0 else " " * width
        lines.append(f"{names[i].ljust(label)} {left}│{right} {values[i]:+.4g}")
    return lines


def render(result: dict[str, Any], top: int) -> None:
    attributions = result["attributions"]
    for row, values in enumerate(attributions):
        flat: list[float] = list(_flatten(values))
        if result.get("tokens"):
            names = [f"{i}:{word}" for i, word in enumerate(result["tokens"][row])]
        else:
            names = result.get("feature_names") or [f"pixel {i}" for i in range(len(flat))]
        head = f"row {row}: {result['output_space']} of class {result['targets'][row]} = {result['scores'][row]:.4g}"
        if result.get("base_values"):
            head += f" (base {result['base_values'][row]:.4g})"
        console.print(f"{head} — {result['method']}", highlight=False)
        for line in bars(names, flat, top):
            console.print(line, highlight=False)


def _flatten(value: Any) -> Any:
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield float(value)


def explain(
    model: str,
    data: Annotated[
        Path,
        typer.Option("--data", help="JSON rows (or a V1 body), a CSV of numbers, or .txt: a text a line."),
    ],
    version: Annotated[str | None, typer.Option(help="Version number or alias. Default: the one served.")] = None,
    method: Annotated[str | None, typer.Option(help="kernel, permutation, exact (tabular) or occlusion.")] = None,
    output: Annotated[str | None, typer.Option(help="Output space: probability, logit or raw.")] = None,
    target: Annotated[int | None, typer.Option(help="The class explained. Default: each row's predicted.")] = None,
    top: Annotated[int, typer.Option(help="Bars per row: the largest attributions.")] = 10,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Explain a model's predictions for the rows in --data: per-feature (or per-pixel) attributions."""
    rows = read_rows(data)
    with reported_errors(), client(url) as api:
        result = api.explain(model, rows, version=version, method=method, output=output, target=target).raw
    show(result, as_json, lambda r: render(r, top))
