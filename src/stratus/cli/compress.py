"""``stratus compress``: make smaller, faster variants of a version and compare them with it."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stratus.cli.output import err_console, print_table, reported_errors
from stratus.cli.training import JsonOption, UrlOption, _client, _params, follow_job
from stratus.errors import InvalidInput


def parse_budget(text: str) -> float:
    """'1%' -> 0.01; a bare number is a fraction (0.01) when below 1, else percent points."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise InvalidInput(
            f"--accuracy-budget takes a percentage like 1% or a fraction like 0.01, not {text!r}"
        ) from None
    if not raw.endswith("%") and value >= 1.0:
        value /= 100.0
    if not 0.0 <= value <= 1.0:
        raise InvalidInput(f"--accuracy-budget must be between 0% and 100%, not {text!r}")
    return value


def render_report(job: dict[str, Any]) -> None:
    from stratus.compress.evaluate import headline, table

    report = job["metrics"]
    rows = table(report)
    metric = headline(report["kind"])
    print_table(
        f"Compression of {report['model']} version {report['parent_version']} "
        f"(budget {report['accuracy_budget']:.2%}, {report['threads']} threads, {report['evaluation_rows']} rows)",
        ["variant", "version", metric, "drop", "size MB", "p50 ms (b1)", "rows/s (b32)", "speedup", "in budget"],
        [
            (
                r["variant"],
                r["version"],
                f"{r[metric]:.4f}",
                f"{r['drop']:+.4f}",
                f"{r['size_mb']:.2f}",
                f"{r['p50_ms']:.3f}",
                f"{r['rows_per_s_b32']:.0f}",
                f"{r['speedup']:.2f}x",
                "yes" if r["in_budget"] else "no",
            )
            for r in rows
        ],
    )
    for variant in report["variants"]:
        for note in variant.get("notes", []):
            err_console.print(f"[yellow]{variant['method']}:[/yellow] {note}", highlight=False)
    best = report.get("recommendation")
    if best is None:
        typer.echo("recommendation: none of the variants is faster than the parent within the budget")
    else:
        promoted = f"; alias {best['promoted']!r} now points to it" if best.get("promoted") else ""
        typer.echo(f"recommendation: {best['method']} (version {best['version']}){promoted}")


def compress(
    target: Annotated[str, typer.Argument(help="NAME or NAME:VERSION (a number or an alias); default latest.")],
    method: Annotated[
        str,
        typer.Option(help="Comma-separated: quantize-dynamic, quantize-static, fp16, prune, distill, optimize."),
    ],
    accuracy_budget: Annotated[str, typer.Option(help="Allowed quality drop, e.g. 1% (accuracy points).")] = "1%",
    promote: Annotated[str | None, typer.Option(help="Move this alias to the recommended variant.")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="METHOD.KEY=VALUE, e.g. prune.ratio=0.5; repeatable.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job with a progress bar.")] = False,
    timeout: Annotated[int, typer.Option(help="Seconds before the job is stopped.")] = 3600,
    timing_seconds: Annotated[
        float, typer.Option(help="Length of each timing phase; 3 alternating rounds per model.")
    ] = 1.0,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compress a model version; every variant becomes a new version, measured against its parent."""
    with reported_errors(), _client(url) as client:
        name, _, version = target.partition(":")
        methods = [m.strip() for m in method.split(",") if m.strip()]
        params: dict[str, dict[str, Any]] = {}
        for key, value in _params(param or []).items():
            owner, sep, field = key.partition(".")
            if not sep:
                raise InvalidInput(f"--param takes METHOD.KEY=VALUE, got {key!r}")
            params.setdefault(owner, {})[field] = value
        job = client.compress(
            name,
            version or "latest",
            methods=methods,
            params=params,
            accuracy_budget=parse_budget(accuracy_budget),
            promote_alias=promote,
            wait=False,
            timeout_s=timeout,
            timing_seconds=timing_seconds,
        )
        follow_job(job, wait=wait, timeout=timeout, as_json=as_json, render=render_report)
