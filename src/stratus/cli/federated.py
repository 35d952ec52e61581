"""``stratus federated create|key|join``: federated learning with Flower (docs/federated.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stratus.cli.output import print_table, reported_errors, show
from stratus.cli.training import JsonOption, UrlOption, _client, _params, follow_job
from stratus.errors import InvalidInput

federated_app = typer.Typer(no_args_is_help=True, help="Federated learning: create a job, make client keys, join.")


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise InvalidInput(f"expected comma-separated integers, got {text!r}") from None


def render_federation(job: dict[str, Any]) -> None:
    metrics = job["metrics"]
    accuracy = metrics.get("accuracy")
    headline = f"{accuracy:.4f}" if isinstance(accuracy, float) else "-"
    title = f"Job {job['id'][:8]}: {job['state']} -> {job['model']} version {job['version']} (held-out {headline})"
    rows = [(client, f"{value:.4f}") for client, value in (metrics.get("client_accuracy") or {}).items()]
    print_table(title, ["client", "held-out accuracy"], rows)


@federated_app.command("create")
def create(
    model: Annotated[str, typer.Option(help="logistic_regression, mlp or cnn.")],
    classes: Annotated[str, typer.Option(help="Class names, comma-separated (every client's labels are among them).")],
    features: Annotated[int | None, typer.Option(help="Tabular: the number of feature columns.")] = None,
    image_shape: Annotated[str | None, typer.Option(help="Images: CHANNELS,HEIGHT,WIDTH.")] = None,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 10,
    min_clients: Annotated[int, typer.Option(help="Clients that must have joined before the first round.")] = 2,
    strategy: Annotated[str, typer.Option(help="fedavg or fedprox.")] = "fedavg",
    proximal_mu: Annotated[float, typer.Option(help="FedProx's proximal term.")] = 0.1,
    local_epochs: Annotated[int, typer.Option(help="Epochs each client trains per round.")] = 1,
    secure_aggregation: Annotated[
        bool, typer.Option("--secure-aggregation/--no-secure-aggregation", help="SecAgg+ (on by default).")
    ] = True,
    round_timeout: Annotated[float, typer.Option(help="Seconds a round waits for slow or gone clients.")] = 120.0,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Training KEY=VALUE (lr, batch_size, ...).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Registered model name (default federated-MODEL).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the rounds with a progress bar.")] = False,
    timeout: Annotated[int, typer.Option(help="Seconds before the job is stopped.")] = 3600,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a federated job: a Flower server that clients join with `stratus federated join`."""
    from stratus.sdk.jobs import Job

    with reported_errors(), _client(url) as client:
        options: dict[str, Any] = {
            "proximal_mu": proximal_mu,
            "local_epochs": local_epochs,
            "round_timeout_s": round_timeout,
            "params": _params(param or []),
            "timeout_s": timeout,
        }
        if name is not None:
            options["name"] = name
        data = client.federated_create(
            model,
            classes=[c.strip() for c in classes.split(",") if c.strip()],
            features=features,
            image_shape=_ints(image_shape) if image_shape else None,
            rounds=rounds,
            min_clients=min_clients,
            strategy=strategy,
            secure_aggregation=secure_aggregation,
            **options,
        )
        follow_job(Job(client, data), wait=wait, timeout=timeout, as_json=as_json, render=render_federation)


@federated_app.command("key")
def key(job_id: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """A client key bound to the job (shown once): it can join this job and nothing else."""
    with reported_errors(), _client(url) as client:
        made = client.federated_key(job_id)
        show(made, as_json, lambda k: typer.echo(f"{k['key']}\n(a federated key bound to job {k['job']}: shown once)"))


@federated_app.command("join")
def join(
    job_id: str,
    data: Annotated[Path, typer.Option(help="Local data: CSV with a target column, NPZ (X, y) or an image ZIP.")],
    client_name: Annotated[str, typer.Option("--client", help="This client's name in the federation.")],
    target: Annotated[str | None, typer.Option(help="CSV target column (default: target).")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for local training.")] = 1,
    url: UrlOption = None,
) -> None:
    """Join a federated job with a federated key (--api-key or STRATUS_API_KEY) and train on local data; the rows
    never leave this machine."""
    with reported_errors(), _client(url) as client:
        answered = client.federated_join(job_id, data, client=client_name, target=target, threads=threads)
        typer.echo(f"federation over: answered {answered} messages of job {job_id}")
