"""The `stratus` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from stratus.cli.alerts import alerts_app
from stratus.cli.automl import automl, leaderboard
from stratus.cli.compress import compress
from stratus.cli.connection import client, set_api_key
from stratus.cli.devices import devices_app, export_edge
from stratus.cli.drift import drift, drift_reference
from stratus.cli.endpoints import endpoints_app, export_app, serve_endpoint
from stratus.cli.explain import explain
from stratus.cli.federated import federated_app
from stratus.cli.monitoring import logging_app, logging_line, logs, metrics
from stratus.cli.output import console, print_table, reported_errors, show
from stratus.cli.personalize import personalize
from stratus.cli.security import audit, keys_app, projects_app, usage
from stratus.cli.serve import run_server, settings_for
from stratus.cli.training import datasets_app, jobs_app, train
from stratus.errors import InvalidInput

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Stratus: self-hosted Model-as-a-Service.")
models_app = typer.Typer(no_args_is_help=True, help="Register, list, inspect and delete models.")
alias_app = typer.Typer(no_args_is_help=True, help="Move aliases such as production and staging.")
app.add_typer(models_app, name="models")
app.add_typer(alias_app, name="alias")
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.command("train")(train)
app.command("compress")(compress)
app.command("automl")(automl)
app.command("leaderboard")(leaderboard)
app.command("personalize")(personalize)
app.add_typer(keys_app, name="keys")
app.add_typer(projects_app, name="projects")
app.command("audit")(audit)
app.command("usage")(usage)
app.add_typer(endpoints_app, name="endpoints")
app.add_typer(export_app, name="export")
export_app.command("edge")(export_edge)
app.add_typer(devices_app, name="devices")
app.command("serve-endpoint")(serve_endpoint)
app.command("logs")(logs)
app.command("metrics")(metrics)
app.add_typer(logging_app, name="logging")
app.command("drift")(drift)
app.command("drift-reference")(drift_reference)
app.command("explain")(explain)
app.add_typer(alerts_app, name="alerts")
app.add_typer(federated_app, name="federated")

UrlOption = Annotated[str | None, typer.Option("--url", envvar="STRATUS_URL", help="Server URL.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


_client = client


@app.callback()
def main(
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="STRATUS_API_KEY",
            help="API key (stk_...). Default: the admin key file of the local server's home.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Stratus: self-hosted Model-as-a-Service."""
    set_api_key(api_key)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind. Default 127.0.0.1 (loopback).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port. Default 8080.")] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="gRPC port (Open Inference Protocol). Default 8081; 0 serves no gRPC."),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(help="Folder for everything the server stores. Default ~/.stratus or STRATUS_HOME."),
    ] = None,
    samples: Annotated[
        bool | None,
        typer.Option("--samples/--no-samples", help="Register the bundled sample models on first start."),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    allowed_hosts: Annotated[
        str | None, typer.Option(help="Comma-separated extra Host header values to accept (DNS rebinding guard).")
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="Local single-user mode without API keys. Loopback only (see --insecure)."),
    ] = False,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow --no-auth on a non-loopback --host. Dangerous.")
    ] = False,
    admin_key_file: Annotated[
        Path | None, typer.Option(help="Write the bootstrap admin key here (mode 0600). Default HOME/admin.key.")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    executor: Annotated[
        str | None, typer.Option(help="Where jobs run: local (child processes) or ray (tasks on --ray-address).")
    ] = None,
    placement: Annotated[
        str | None, typer.Option(help="Where replicas run: local (processes) or ray (actors on --ray-address).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster for --executor/--placement ray: HOST:PORT or ray://HOST:10001.")
    ] = None,
) -> None:
    """Start the platform: REST APIs, registry and inference."""
    with reported_errors():
        settings = settings_for(host, port, home, samples, log_level)
        if allowed_hosts:
            extra = [h.strip() for h in allowed_hosts.split(",") if h.strip()]
            settings = settings.model_copy(update={"allowed_hosts": [*settings.allowed_hosts, *extra]})
        updates: dict[str, Any] = {}
        for field, value in (("admin_key_file", admin_key_file), ("tls_cert", tls_cert), ("tls_key", tls_key)):
            if value is not None:
                updates[field] = value.expanduser().resolve()
        if insecure:
            updates["insecure"] = True
        if grpc_port is not None:
            updates["grpc_port"] = grpc_port
        if no_auth:
            updates["auth"] = False
        for field, text in (("executor", executor), ("placement", placement), ("ray_address", ray_address)):
            if text is not None:
                if field != "ray_address" and text not in ("local", "ray"):
                    raise typer.BadParameter(f"--{field} is local or ray, not {text!r}")
                updates[field] = text
        settings = settings.model_copy(update=updates)
        try:
            settings.check_ray()
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        run_server(settings)


def _render_models(models: list[dict[str, Any]]) -> None:
    rows = [
        (
            m["name"],
            m["task"],
            m["latest_version"],
            ", ".join(f"{k}->v{v}" for k, v in m["aliases"].items()),
            m["description"][:60],
        )
        for m in models
    ]
    print_table("Models", ["name", "task", "latest", "aliases", "description"], rows)


def _render_model(model: dict[str, Any], versions: list[dict[str, Any]]) -> None:
    print_table(
        f"Model {model['name']} ({model['task']})",
        ["version", "status", "health", "aliases", "digest", "inputs", "outputs", "metrics"],
        [
            (
                v["version"],
                v["status"],
                v["health"],
                ", ".join(v["aliases"]),
                v["digest"][7:19],
                "; ".join(f"{t['name']}:{t['datatype']}{t['shape']}" for t in v["signature"]["inputs"]),
                "; ".join(f"{t['name']}:{t['datatype']}{t['shape']}" for t in v["signature"]["outputs"]),
                ", ".join(
                    f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}" for k, val in v["metrics"].items()
                ),
            )
            for v in versions
        ],
    )


def _render_shown_model(value: dict[str, Any]) -> None:
    _render_model(value["model"], value["versions"])
    console.print(logging_line(value["logging"]), highlight=False)


@models_app.command("list")
def models_list(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List registered models."""
    with reported_errors(), _client(url) as client:
        show(client.list_models(), as_json, _render_models)


@models_app.command("show")
def models_show(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Show a model with its versions, signatures and metrics."""
    with reported_errors(), _client(url) as client:
        model, versions, logging = client.get_model(name), client.list_versions(name), client.get_logging(name)
        show(
            {"model": model, "versions": versions, "logging": logging},
            as_json,
            _render_shown_model,
        )


@models_app.command("register")
def models_register(
    name: str,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="An ONNX file.")],
    version: Annotated[int | None, typer.Option(help="Explicit version number (default: next).")] = None,
    description: Annotated[str, typer.Option(help="What this version is.")] = "",
    task: Annotated[str, typer.Option(help="classification, regression, embedding or other.")] = "other",
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload an ONNX file as a new version of NAME (the model is created if needed)."""
    with reported_errors(), _client(url) as client:
        info = client.register_model(name, file, version=version, description=description, task=task)
        show(
            info,
            as_json,
            lambda v: typer.echo(f"registered {v['model']} version {v['version']} ({v['digest']})"),
        )


@models_app.command("delete")
def models_delete(
    name: str,
    version: Annotated[int | None, typer.Option(help="Delete only this version.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = None,
) -> None:
    """Delete a model with all its versions, or one version."""
    what = f"version {version} of model {name!r}" if version else f"model {name!r} and all its versions"
    if not yes and not typer.confirm(f"Delete {what}?"):
        raise typer.Exit(1)
    with reported_errors(), _client(url) as client:
        if version is None:
            client.delete_model(name)
        else:
            client.delete_version(name, version)
        typer.echo(f"deleted {what}")


@alias_app.command("set")
def alias_set(name: str, alias: str, version: int, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Point ALIAS of model NAME at VERSION (atomically)."""
    with reported_errors(), _client(url) as client:
        info = client.set_alias(name, alias, version)
        show(info, as_json, lambda v: typer.echo(f"{name}@{alias} -> version {v['version']}"))


def _predict_body(data: str | None, file: Path | None) -> Any:
    if (data is None) == (file is None):
        raise InvalidInput("give exactly one of --data JSON or --file F")
    raw = data if data is not None else file.read_text()  # type: ignore[union-attr]
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the input is not valid JSON: {exc}") from None


@app.command()
def predict(
    model: str,
    version: Annotated[str | None, typer.Option(help="Version number or alias.")] = None,
    data: Annotated[
        str | None, typer.Option(help='JSON: a list of rows, {"instances": ...}, or a V2 {"inputs": [...]}.')
    ] = None,
    file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Read the JSON from a file.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a prediction. Rows go through V1 :predict; a V2 body goes to V2 infer."""
    with reported_errors(), _client(url) as client:
        body = _predict_body(data, file)
        is_v2 = (
            isinstance(body, dict)
            and isinstance(body.get("inputs"), list)
            and all(isinstance(i, dict) and "datatype" in i for i in body["inputs"])
        )
        if is_v2:
            result = client.infer(model, body, version)
            show(
                result,
                as_json,
                lambda r: print_table(
                    f"{r['model_name']} version {r['model_version']}",
                    ["output", "datatype", "shape", "data"],
                    [(o["name"], o["datatype"], o["shape"], o["data"]) for o in r["outputs"]],
                ),
            )
            return
        if isinstance(body, list):
            body = {"instances": body}
        result = client.predict_v1(model, body, version)
        show(
            result,
            as_json,
            lambda r: print_table(f"{model} predictions", ["row", "prediction"], list(enumerate(r["predictions"]))),
        )
