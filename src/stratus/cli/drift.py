"""`stratus drift NAME` (a table of each feature's test and result) and `stratus drift-reference`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stratus.cli.connection import client
from stratus.cli.output import console, print_table, reported_errors, show

UrlOption = Annotated[str | None, typer.Option("--url", envvar="STRATUS_URL", help="Server URL.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def _score(item: dict[str, Any]) -> str:
    kind = "p" if item["test"] in ("ks", "chisquare") else "d"
    return f"{kind}={item['score']:.4g}"


def render_report(report: dict[str, Any]) -> None:
    where = f" via endpoint {report['endpoint']}" if report.get("endpoint") else ""
    window = report["window"]
    title = f"Drift of {report['model']} v{report['version']}{where}: {window['rows']} logged row(s)"
    if report.get("status") != "ok":
        console.print(f"{title}\n{report.get('message', '')}", highlight=False)
        return
    features = sorted(report["features"], key=lambda f: (not f["drifted"], f["name"]))
    rows = [
        (
            f["name"],
            f["test"],
            _score(f),
            f"{f['threshold']:g}",
            "" if f["psi"] is None else f"{f['psi']:.3f}",
            "DRIFT" if f["drifted"] else "ok",
        )
        for f in features
    ]
    if report.get("prediction"):
        p = report["prediction"]
        result = "DRIFT" if p["drifted"] else "ok"
        rows.append(("(prediction)", p["test"], _score(p), f"{p['threshold']:g}", "", result))
    print_table(title, ["feature", "test", "score", "threshold", "psi", "result"], rows)
    verdict = "DATASET DRIFT" if report["dataset_drift"] else "no dataset drift"
    console.print(
        f"{report['drifted_features']}/{report['features_tested']} features drifted "
        f"(share {report['drift_share']:.2f}, dataset drift at >= {report['share_threshold']:g}): {verdict}",
        highlight=False,
    )


def _render(result: dict[str, Any]) -> None:
    for report in result.get("reports", [result]):
        render_report(report)


def _render_history(points: list[dict[str, Any]]) -> None:
    rows = [
        (p["at"], p["version"], p["endpoint"] or "", p["window_rows"], f"{p['drift_share']:.2f}", p["dataset_drift"])
        for p in points
    ]
    print_table("Drift history", ["at", "version", "endpoint", "rows", "share", "dataset drift"], rows)


def drift(
    name: str,
    endpoint: Annotated[bool, typer.Option("--endpoint", help="NAME is an endpoint: one report per version.")] = False,
    version: Annotated[str | None, typer.Option(help="Version number or alias. Default: the one served.")] = None,
    last: Annotated[int | None, typer.Option(help="Window: the last N logged input rows.")] = None,
    minutes: Annotated[float | None, typer.Option(help="Window: the rows logged in the last T minutes.")] = None,
    history: Annotated[bool, typer.Option("--history", help="The stored drift reports instead.")] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Drift of a model (or endpoint): each feature of its training reference against the logged inputs."""
    with reported_errors(), client(url) as api:
        if history:
            number = int(version) if version is not None and version.isdigit() else None
            show(api.drift_history(name, version=number, endpoint=endpoint), as_json, _render_history)
            return
        show(api.drift(name, version=version, last=last, minutes=minutes, endpoint=endpoint), as_json, _render)


def drift_reference(
    name: str,
    version: int,
    file: Annotated[Path, typer.Argument(help="CSV or NPZ with the model's input features.")],
    target: Annotated[str | None, typer.Option(help="A CSV column that is not an input (the label).")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload the drift reference of a version registered from outside (its training data, or a sample)."""
    with reported_errors(), client(url) as api:
        result = api.upload_reference(name, version, file, target=target)
    show(
        result,
        as_json,
        lambda r: console.print(
            f"Reference of {name} v{version}: {r['rows']} rows ({r['source']}), {len(r['features'])} features.",
            highlight=False,
        ),
    )
