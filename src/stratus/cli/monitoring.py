"""`stratus logs NAME` (the inference log), `stratus logging show|set|reset NAME` (what it keeps) and
`stratus metrics NAME` (the metrics history)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from stratus.cli.connection import client
from stratus.cli.output import console, print_table, reported_errors, show

UrlOption = Annotated[str | None, typer.Option("--url", envvar="STRATUS_URL", help="Server URL.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
EndpointOption = Annotated[bool, typer.Option("--endpoint", help="NAME is an endpoint, not a model.")]

logging_app = typer.Typer(
    help="What the inference log keeps of a model's or an endpoint's requests.", no_args_is_help=True
)


def logging_line(setting: dict[str, Any]) -> str:
    """One line for `models show` / `endpoints show`."""
    mode = setting["mode"]
    share = f"sampled {setting['rate']:.0%}" if mode == "sampled" else mode
    payloads = ", with payloads" if setting["payloads"] and mode != "off" else ""
    return f"logging: {share}{payloads} ({setting['source']} setting)"


@logging_app.command("show")
def logging_show(
    name: str, endpoint: EndpointOption = False, url: UrlOption = None, as_json: JsonOption = False
) -> None:
    """What the log keeps of NAME's requests."""
    with reported_errors(), client(url) as api:
        show(api.get_logging(name, endpoint=endpoint), as_json, lambda s: console.print(logging_line(s)))


@logging_app.command("set")
def logging_set(
    name: str,
    mode: Annotated[str, typer.Option(help="off, sampled or all.")],
    rate: Annotated[float, typer.Option(help="Share of requests kept when sampled, (0, 1].")] = 1.0,
    payloads: Annotated[bool, typer.Option("--payloads/--no-payloads", help="Keep the tensors (masked).")] = False,
    endpoint: EndpointOption = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Log NAME's requests: all, a sampled share, or none; with or without their payloads."""
    with reported_errors(), client(url) as api:
        setting = api.set_logging(name, mode, rate=rate, payloads=payloads, endpoint=endpoint)
        show(setting, as_json, lambda s: console.print(logging_line(s)))


@logging_app.command("reset")
def logging_reset(
    name: str, endpoint: EndpointOption = False, url: UrlOption = None, as_json: JsonOption = False
) -> None:
    """Back to the server's default."""
    with reported_errors(), client(url) as api:
        show(api.reset_logging(name, endpoint=endpoint), as_json, lambda s: console.print(logging_line(s)))


def _when(record: dict[str, Any]) -> str:
    return str(record["at"]).replace("T", " ").rstrip("Z")[:23]


def _tensors(tensors: dict[str, Any] | None) -> str:
    if tensors is None:
        return ""
    parts = []
    for name, tensor in tensors.items():
        if tensor.get("masked"):
            parts.append(f"{name}=***")
            continue
        data = tensor["data"]
        text = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in data[:6])
        parts.append(f"{name}{tensor['shape']}=[{text}{', ...' if len(data) > 6 or tensor.get('truncated') else ''}]")
    return "; ".join(parts)


def _render(body: dict[str, Any]) -> None:
    rows = [
        (
            _when(r),
            f"v{r['version']}" if r["version"] else "",
            r["endpoint"],
            r["protocol"],
            f"{r['latency_ms']:.2f}",
            r["status"] if not r["error"] else f"{r['status']} {r['error']}",
            r["batch_size"],
            r["key_id"],
            _tensors(r["inputs"]),
            _tensors(r["outputs"]),
        )
        for r in body["records"]
    ]
    columns = ["at (UTC)", "version", "endpoint", "protocol", "ms", "status", "rows", "key", "inputs", "outputs"]
    print_table("Inference log (newest first)", columns, rows)
    if body.get("next"):
        console.print(f"more: --before {body['next']}", highlight=False)


def logs(
    name: str,
    since: Annotated[str | None, typer.Option(help="How far back: 30s, 15m, 1h, 7d.")] = "1h",
    version: Annotated[int | None, typer.Option(help="Only this version.")] = None,
    status: Annotated[str | None, typer.Option(help="ok, error or an HTTP status.")] = None,
    limit: Annotated[int, typer.Option(help="Records (a page; an export takes up to 100,000).")] = 20,
    before: Annotated[str | None, typer.Option(help="Continue after this record id.")] = None,
    export: Annotated[str | None, typer.Option("--format", help="Export as jsonl or parquet instead.")] = None,
    out: Annotated[Path | None, typer.Option(help="File for the export (default: stdout for jsonl).")] = None,
    endpoint: EndpointOption = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """The inference log of model NAME (or endpoint NAME with --endpoint), newest first."""
    with reported_errors(), client(url) as api:
        if export is not None:
            if export not in ("jsonl", "parquet"):
                raise typer.BadParameter("--format is jsonl or parquet")
            if export == "parquet" and out is None:
                raise typer.BadParameter("a Parquet export needs --out FILE")
            data = api.export_log(
                name, export, since=since, version=version, status=status, limit=limit, endpoint=endpoint
            )
            if out is None:
                typer.echo(data.decode(), nl=False)
            else:
                out.write_bytes(data)
                console.print(f"wrote {len(data):,} bytes to {out}", highlight=False)
            return
        body = api.log(name, since=since, version=version, status=status, limit=limit, before=before, endpoint=endpoint)
        show(body, as_json, _render)


def metrics(
    name: str,
    metric: Annotated[str, typer.Option(help="Comma list: requests_per_s, error_rate, p50_ms, p99_ms, ...")] = (
        "requests_per_s,error_rate,p99_ms"
    ),
    since: Annotated[str, typer.Option(help="How far back: 15m, 1h, 7d.")] = "1h",
    step: Annotated[int, typer.Option(help="Seconds per point (at least 10).")] = 300,
    version: Annotated[int | None, typer.Option(help="Only this version (models).")] = None,
    endpoint: EndpointOption = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Metrics history of model NAME (or endpoint NAME), one row per step."""
    with reported_errors(), client(url) as api:
        series = api.metrics_series(name, metric, since=since, step=step, version=version, endpoint=endpoint)

        def render(value: dict[str, list[tuple[float, float | None]]]) -> None:
            names = list(value)
            times = [t for t, _ in value[names[0]]] if names else []
            rows = [
                (
                    datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    *("" if value[m][i][1] is None else f"{value[m][i][1]:.4g}" for m in names),
                )
                for i, t in enumerate(times)
            ]
            print_table(f"Metrics of {name}", ["from (UTC)", *names], rows)

        show(series, as_json, render)
