"""`stratus datasets ...`, `stratus train ...`, `stratus jobs ...`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from stratus.cli.connection import client
from stratus.cli.output import console, err_console, print_json, print_table, reported_errors, show
from stratus.errors import InvalidInput

datasets_app = typer.Typer(no_args_is_help=True, help="Upload, list, inspect and delete datasets.")
jobs_app = typer.Typer(no_args_is_help=True, help="Training jobs: list, show, logs, cancel.")

UrlOption = Annotated[str | None, typer.Option("--url", envvar="STRATUS_URL", help="Server URL.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


_client = client


def _render_dataset(d: dict[str, Any]) -> None:
    print_table(
        f"Dataset {d['name']} ({d['format']}, {d['rows']} rows, {d['task']})",
        ["feature", "kind", "mean", "std", "min", "max", "missing"],
        [
            (
                name,
                "numeric",
                f"{p.get('mean', 0):.4g}",
                f"{p.get('std', 0):.4g}",
                f"{p.get('min', 0):.4g}",
                f"{p.get('max', 0):.4g}",
                p.get("missing"),
            )
            for name, p in d["profile"].get("features", {}).items()
        ],
    )
    if "image" in d["schema"]:
        image = d["schema"]["image"]
        console.print(f"images: {image['channels']} channel(s), {image['height']}x{image['width']}")
    if "class_distribution" in d["profile"]:
        print_table("Classes", ["class", "rows"], list(d["profile"]["class_distribution"].items()))


@datasets_app.command("upload")
def datasets_upload(
    file: Annotated[
        Path | None, typer.Argument(exists=True, dir_okay=False, help="CSV, NPZ or image-folder ZIP.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the file's stem).")] = None,
    builtin: Annotated[
        str | None, typer.Option(help="Register scikit-learn's iris, wine, breast_cancer, digits or diabetes.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="CSV target column.")] = None,
    missing: Annotated[str, typer.Option(help="error (refuse NaN) or impute.")] = "error",
    task: Annotated[str | None, typer.Option(help="classification or regression (default: inferred).")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload a dataset file, or register a built-in one with --builtin."""
    with reported_errors(), _client(url) as client:
        if builtin is not None:
            info = client.upload_dataset(name or builtin, builtin=builtin)
        elif file is not None:
            info = client.upload_dataset(name or file.stem, file, target=target, missing=missing, task=task)
        else:
            raise InvalidInput("give a FILE or --builtin NAME")
        show(info, as_json, _render_dataset)


@datasets_app.command("list")
def datasets_list(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List datasets."""
    with reported_errors(), _client(url) as client:
        show(
            client.list_datasets(),
            as_json,
            lambda ds: print_table(
                "Datasets",
                ["name", "format", "rows", "task", "target", "digest"],
                [(d["name"], d["format"], d["rows"], d["task"], d["target"], d["digest"][7:19]) for d in ds],
            ),
        )


@datasets_app.command("show")
def datasets_show(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Show a dataset's schema and statistics."""
    with reported_errors(), _client(url) as client:
        show(client.get_dataset(name), as_json, _render_dataset)


@datasets_app.command("delete")
def datasets_delete(name: str, url: UrlOption = None) -> None:
    """Delete a dataset."""
    with reported_errors(), _client(url) as client:
        client.delete_dataset(name)
        typer.echo(f"deleted dataset {name!r}")


def _params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise InvalidInput(f"--param takes KEY=VALUE, got {pair!r}")
        try:
            params[key] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            params[key] = raw
    return params


def render_metrics(job: dict[str, Any]) -> None:
    waiting = (job.get("progress") or {}).get("waiting")
    if job["state"] == "queued" and waiting:  # a data-parallel job the cluster has no room for yet
        typer.echo(f"job {job['id']} is queued: {waiting}")
    metrics = job["metrics"]
    scalars = [(k, f"{v:.4f}") for k, v in metrics.items() if isinstance(v, float)]
    print_table(
        f"Job {job['id'][:8]}: {job['state']} -> {job['model']} version {job['version']}", ["metric", "value"], scalars
    )
    if "per_class" in metrics:
        print_table(
            "Per class",
            ["class", "precision", "recall", "f1", "support"],
            [
                (c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"])
                for c, m in metrics["per_class"].items()
            ],
        )


def _follow(job: Any) -> None:
    """A live progress bar from the job's Server-Sent Events: epoch, loss, validation metric, ETA."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("epoch {task.completed}/{task.total}"),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        bar = progress.add_task("training", total=None, stats="")
        for event in job.events():
            data = event["data"]
            if event["kind"] == "epoch":
                stats = f"loss {data['loss']:.4f}" if data.get("loss") is not None else ""
                if data.get("val_metric") is not None:
                    stats += f"  val {data.get('val_metric_name', 'metric')} {data['val_metric']:.4f}"
                if "joined" in data:  # a federated round (docs/federated.md): clients in it, and those gone
                    stats += f"  clients {len(data.get('clients') or {})}/{len(data['joined'])}"
                    stats += f" ({len(data.get('dropped') or [])} dropped)" if data.get("dropped") else ""
                progress.update(bar, total=data["epochs"], completed=data["epoch"], stats=stats)
            elif event["kind"] == "step":
                progress.update(bar, description=f"{data['method']} done ({data['step']}/{data['steps']})")
            elif event["kind"] == "state":
                progress.update(bar, description=data["state"])
            elif event["kind"] == "log":
                progress.console.print(f"[dim]{data.get('message', '')}[/dim]")
            elif event["kind"] == "waiting":
                progress.update(bar, description="queued")
                progress.console.print(f"[yellow]{data.get('reason', '')}[/yellow]")
            elif event["kind"] == "resumed":
                progress.console.print(f"[dim]resumed from the checkpoint of epoch {data.get('from_epoch')}[/dim]")


@jobs_app.command("list")
def jobs_list(
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first."""
    with reported_errors(), _client(url) as client:
        jobs = [j.data for j in client.list_jobs(state)]
        show(
            jobs,
            as_json,
            lambda js: print_table(
                "Jobs",
                ["id", "kind", "state", "model", "version", "created"],
                [(j["id"], j["kind"], j["state"], j["model"], j["version"], j["created_at"]) for j in js],
            ),
        )


@jobs_app.command("show")
def jobs_show(job_id: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Show a job with its metrics."""
    with reported_errors(), _client(url) as client:
        show(client.get_job(job_id).data, as_json, render_metrics)


@jobs_app.command("logs")
def jobs_logs(job_id: str, url: UrlOption = None) -> None:
    """Print a job's events."""
    with reported_errors(), _client(url) as client:
        for event in client._json("GET", f"/api/v1/jobs/{job_id}/logs")["events"]:
            typer.echo(f"{event['at']} {event['kind']:6} {orjson.dumps(event['data']).decode()}")


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: UrlOption = None) -> None:
    """Cancel a job (takes effect within 2 s)."""
    with reported_errors(), _client(url) as client:
        typer.echo(f"job {job_id}: {client.get_job(job_id).cancel().state}")


def train(
    dataset: Annotated[str, typer.Option(help="Dataset name.")],
    model: Annotated[
        str,
        typer.Option(
            help="linear_regression, logistic_regression, decision_tree, random_forest, svm, mlp, cnn, "
            "text_classifier, fine_tune, rnn, transformer"
        ),
    ],
    name: Annotated[str | None, typer.Option(help="Registered model name (default DATASET-MODEL).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (torch trainers).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Hyperparameter KEY=VALUE, repeatable.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job with a progress bar.")] = False,
    timeout: Annotated[int, typer.Option(help="Seconds before the job is stopped.")] = 3600,
    workers: Annotated[
        int | None, typer.Option(help="Data-parallel on the Ray cluster: Ray Train workers (torch trainers).")
    ] = None,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs each worker asks Ray for.")] = 1.0,
    memory_mb_per_worker: Annotated[int, typer.Option(help="Memory each worker asks Ray for, MB (0: none).")] = 0,
    dp_epsilon: Annotated[
        float | None, typer.Option(help="Train with DP-SGD within this privacy budget (docs/privacy.md).")
    ] = None,
    dp_delta: Annotated[float | None, typer.Option(help="DP-SGD's delta (default 1e-5).")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train a model on a dataset as a job; the result is registered as a new version."""
    with reported_errors(), _client(url) as client:
        params = _params(param or [])
        if epochs is not None:
            params["epochs"] = epochs
        job = client.train(
            dataset,
            model,
            name=name,
            params=params,
            wait=False,
            timeout_s=timeout,
            workers=workers,
            cpus_per_worker=cpus_per_worker,
            memory_mb_per_worker=memory_mb_per_worker,
            dp_epsilon=dp_epsilon,
            dp_delta=dp_delta,
        )
        follow_job(job, wait=wait, timeout=timeout, as_json=as_json, render=render_metrics)


def follow_job(job: Any, *, wait: bool, timeout: int, as_json: bool, render: Callable[[dict[str, Any]], None]) -> None:
    """After submitting: print the job, or follow it with a progress bar and render its result; a job that
    did not succeed exits with status 1 and its reason."""
    if not wait:
        show(job.data, as_json, lambda j: typer.echo(f"submitted {j['kind']} job {j['id']} ({j['state']})"))
        return
    if not as_json:
        _follow(job)
    job.wait(timeout_s=timeout + 60, raise_on_failure=False)
    if as_json:
        print_json(job.data)
    elif job.state == "succeeded":
        render(job.data)
    if job.state != "succeeded":
        err_console.print(f"[red]job {job.id} {job.state}:[/red] {job.error}", highlight=False)
        raise typer.Exit(1)
