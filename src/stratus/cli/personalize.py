"""``stratus personalize``: fine-tune the bundled embedding model on this project's own data."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stratus.cli.output import print_table, reported_errors
from stratus.cli.training import JsonOption, UrlOption, _client, _params, follow_job


def render_report(job: dict[str, Any]) -> None:
    report = job["metrics"]
    metric = report["metric"]
    rows = [(metric, f"{report['base']:.4f}", f"{report['personalized']:.4f}", f"{report['improvement']:+.4f}")]
    for key in sorted(report):
        if key.startswith("base_") and key != "base_model" and f"personalized_{key[5:]}" in report:
            extra = key[5:]
            base, tuned = report[key], report[f"personalized_{extra}"]
            rows.append((extra, f"{base:.4f}", f"{tuned:.4f}", f"{tuned - base:+.4f}"))
    print_table(
        f"{report['base_model']} personalized as {job['model']} version {job['version']} ({report['mode']}: "
        f"{report['train']} training rows, {report['held_out']} held out, {report['steps']} steps)",
        ["held-out metric", "base", "personalized", "change"],
        rows,
    )
    typer.echo(f"serve it: POST /openai/v1/embeddings with model {job['model']!r} (this project's keys only)")


def personalize(
    base: Annotated[str, typer.Argument(help="The embedding model to start from: minilm.")],
    dataset: Annotated[str, typer.Option(help="A CSV dataset: anchor,positive (pairs) or text,label columns.")],
    name: Annotated[str | None, typer.Option(help="The new model's name (default BASE-DATASET).")] = None,
    mode: Annotated[str | None, typer.Option(help="pairs or labels (default: from the columns).")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (default 200).")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="KEY=VALUE: lr, batch_size, max_length, scale, held_out, seed.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job with a progress bar.")] = False,
    timeout: Annotated[int, typer.Option(help="Seconds before the job is stopped.")] = 3600,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Personalize an embedding model on this project's data; the new model is private to the project."""
    with reported_errors(), _client(url) as client:
        params = _params(param or [])
        if mode is not None:
            params["mode"] = mode
        if steps is not None:
            params["steps"] = steps
        job = client.personalize(dataset, base, name=name, params=params, wait=False, timeout_s=timeout)
        follow_job(job, wait=wait, timeout=timeout, as_json=as_json, render=render_report)
