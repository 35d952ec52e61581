"""`stratus endpoints ...`, `stratus export docker|k8s` and `stratus serve-endpoint`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from stratus.cli.connection import client
from stratus.cli.output import console, print_table, reported_errors, show
from stratus.errors import InvalidInput

endpoints_app = typer.Typer(no_args_is_help=True, help="Endpoints: stable names routed to model versions.")
export_app = typer.Typer(no_args_is_help=True, help="Package an endpoint for Docker or Kubernetes.")

UrlOption = Annotated[str | None, typer.Option("--url", envvar="STRATUS_URL", help="Server URL.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
TargetOption = Annotated[
    list[str],
    typer.Option("--target", "-t", help="MODEL[:VERSION|ALIAS][=WEIGHT], repeatable. E.g. digits:1=90 -t digits:2=10"),
]
ShadowOption = Annotated[
    list[str] | None, typer.Option("--shadow", help="MODEL[:VERSION] that gets a copy of traffic.")
]
StickyOption = Annotated[str | None, typer.Option(help="Route by a hash of this request header (A/B tests).")]
MinOption = Annotated[int | None, typer.Option(help="Fewest replicas per target (0 allows scale to zero).")]
MaxOption = Annotated[int | None, typer.Option(help="Most replicas per target.")]
InFlightOption = Annotated[float | None, typer.Option(help="Autoscaling target: in-flight requests per replica.")]
CooldownOption = Annotated[float | None, typer.Option(help="Seconds of low load before a replica is removed.")]
CanaryOption = Annotated[bool, typer.Option("--canary", help="Roll out in traffic steps with automatic rollback.")]
StepsOption = Annotated[str | None, typer.Option(help="Canary traffic steps in percent, e.g. 10,50,100.")]
StepSecondsOption = Annotated[float | None, typer.Option(help="Seconds each canary step is watched.")]
ErrorRateOption = Annotated[float | None, typer.Option(help="Canary rolls back above this error rate (0-1).")]
P99Option = Annotated[float | None, typer.Option(help="Canary rolls back above this p99 latency (ms).")]
WaitOption = Annotated[bool, typer.Option("--wait", help="Wait until the new revision is live.")]


def parse_target(text: str) -> dict[str, Any]:
    """``digits:2=90`` -> {"model": "digits", "version": "2", "weight": 90}."""
    ref, _, weight = text.partition("=")
    model, _, version = ref.partition(":")
    target: dict[str, Any] = {"model": model, "version": version or "latest"}
    if weight:
        if not weight.isdigit():
            raise InvalidInput(f"weight in {text!r} must be a whole number 0-100")
        target["weight"] = int(weight)
    return target


def spec_from_options(
    targets: list[str],
    shadows: list[str] | None,
    sticky_header: str | None,
    min_replicas: int | None,
    max_replicas: int | None,
    target_in_flight: float | None,
    cooldown: float | None,
    canary: bool,
    steps: str | None,
    step_seconds: float | None,
    max_error_rate: float | None,
    max_p99_ms: float | None,
) -> dict[str, Any]:
    scaling = {
        k: v
        for k, v in (
            ("min_replicas", min_replicas),
            ("max_replicas", max_replicas),
            ("target_in_flight", target_in_flight),
            ("cooldown_seconds", cooldown),
        )
        if v is not None
    }
    canary_spec: dict[str, Any] = {
        k: v
        for k, v in (("step_seconds", step_seconds), ("max_error_rate", max_error_rate), ("max_p99_ms", max_p99_ms))
        if v is not None
    }
    if steps:
        try:
            canary_spec["steps"] = [int(s) for s in steps.split(",")]
        except ValueError:
            raise InvalidInput(f"--steps takes whole percentages like 10,50,100, not {steps!r}") from None
    spec: dict[str, Any] = {
        "targets": [parse_target(t) for t in targets],
        "shadows": [{k: v for k, v in parse_target(s).items() if k != "weight"} for s in shadows or []],
        "rollout": "canary" if canary else "rolling",
    }
    if sticky_header:
        spec["sticky_header"] = sticky_header
    if scaling:
        spec["scaling"] = scaling
    if canary_spec:
        spec["canary"] = canary_spec
    return spec


def _render(endpoint: dict[str, Any]) -> None:
    console.print(
        f"[bold]{endpoint['name']}[/bold]  state {endpoint['state']}  revision {endpoint['revision']}"
        f" (latest {endpoint['latest_revision']}) {endpoint['message']}"
    )
    live = endpoint.get("live") or {"targets": [], "shadows": []}
    rows = [
        (
            f"{t['model']}:{t['version']}",
            f"{t['traffic'] * 100:.0f}%",
            sum(1 for r in t["replicas"] if r["state"] == "ready"),
            ", ".join(f"{r['id']}({r['state']}, pid {r['pid']})" for r in t["replicas"]),
        )
        for t in live["targets"]
    ] + [
        (f"{t['model']}:{t['version']}", "shadow", sum(1 for r in t["replicas"] if r["state"] == "ready"), "")
        for t in live["shadows"]
    ]
    print_table("Targets", ["version", "traffic", "ready", "replicas"], rows)
    if "logging" in endpoint:  # `endpoints show` adds it
        from stratus.cli.monitoring import logging_line

        console.print(logging_line(endpoint["logging"]), highlight=False)


def _apply(name: str, spec: dict[str, Any], url: str | None, as_json: bool, wait: bool, create: bool) -> None:
    with reported_errors(), client(url) as api:
        call = api.create_endpoint if create else api.update_endpoint
        endpoint = call(name, **spec)
        if wait:
            endpoint = api.wait_endpoint(name, endpoint["latest_revision"])
    show(endpoint, as_json, _render)


def _spec_command(create: bool) -> Callable[..., None]:
    """`create` and `update` take the same options: a whole spec (an update replaces it)."""

    def command(
        name: str,
        target: TargetOption,
        shadow: ShadowOption = None,
        sticky_header: StickyOption = None,
        min_replicas: MinOption = None,
        max_replicas: MaxOption = None,
        target_in_flight: InFlightOption = None,
        cooldown: CooldownOption = None,
        canary: CanaryOption = False,
        steps: StepsOption = None,
        step_seconds: StepSecondsOption = None,
        max_error_rate: ErrorRateOption = None,
        max_p99_ms: P99Option = None,
        wait: WaitOption = False,
        url: UrlOption = None,
        as_json: JsonOption = False,
    ) -> None:
        spec = spec_from_options(
            target, shadow, sticky_header, min_replicas, max_replicas, target_in_flight, cooldown, canary, steps,
            step_seconds, max_error_rate, max_p99_ms,
        )  # fmt: skip
        _apply(name, spec, url, as_json, wait, create=create)

    command.__doc__ = (
        "Create an endpoint routing to one or more model versions."
        if create
        else "Replace an endpoint's spec: a new revision, rolled out without downtime (or as a canary)."
    )
    return command


endpoints_app.command("create")(_spec_command(create=True))
endpoints_app.command("update")(_spec_command(create=False))


@endpoints_app.command("list")
def list_endpoints(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List endpoints with their live revision and targets."""
    with reported_errors(), client(url) as api:
        endpoints = api.list_endpoints()

    def render(items: list[dict[str, Any]]) -> None:
        rows = [
            (
                e["name"],
                e["state"],
                e["revision"],
                ", ".join(f"{t['model']}:{t['version']}={t['weight']}" for t in e["spec"].get("targets", [])),
            )
            for e in items
        ]
        print_table("Endpoints", ["name", "state", "revision", "targets"], rows)

    show(endpoints, as_json, render)


@endpoints_app.command("show")
def show_endpoint(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """An endpoint's state, traffic split and replicas."""
    with reported_errors(), client(url) as api:
        endpoint = {**api.get_endpoint(name), "logging": api.get_logging(name, endpoint=True)}
        show(endpoint, as_json, _render)


@endpoints_app.command("delete")
def delete(name: str, url: UrlOption = None) -> None:
    """Delete an endpoint and stop its replicas."""
    with reported_errors(), client(url) as api:
        api.delete_endpoint(name)
    console.print(f"Deleted endpoint {name}.")


@endpoints_app.command("rollback")
def rollback(
    name: str,
    revision: Annotated[int | None, typer.Option(help="Revision to return to. Default: the previous live one.")] = None,
    wait: WaitOption = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deploy an earlier revision again (as a new revision)."""
    with reported_errors(), client(url) as api:
        endpoint = api.rollback_endpoint(name, revision)
        if wait:
            endpoint = api.wait_endpoint(name, endpoint["latest_revision"])
    show(endpoint, as_json, _render)


@endpoints_app.command("revisions")
def revisions(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Every revision of an endpoint and what became of it."""
    with reported_errors(), client(url) as api:
        found = api.endpoint_revisions(name)

    def render(items: list[dict[str, Any]]) -> None:
        rows = [
            (
                r["revision"],
                r["status"],
                ", ".join(f"{t['model']}:{t['version']}={t['weight']}" for t in r["spec"]["targets"]),
                r["reason"],
                r["created_at"],
            )
            for r in items
        ]
        print_table(f"Revisions of {name}", ["revision", "status", "targets", "reason", "created"], rows)

    show(found, as_json, render)


@endpoints_app.command("events")
def events(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Rollouts, traffic steps, rollbacks, scaling and replica restarts."""
    with reported_errors(), client(url) as api:
        found = api.endpoint_events(name)

    def render(items: list[dict[str, Any]]) -> None:
        rows = [(e["at"], e["kind"], e["revision"], e["detail"]) for e in items]
        print_table(f"Events of {name}", ["at", "kind", "revision", "detail"], rows)

    show(found, as_json, render)


@export_app.command("docker")
def export_docker(
    endpoint: str,
    out: Annotated[Path, typer.Option("--out", help="Folder to write the build context into.")],
    url: UrlOption = None,
) -> None:
    """Write a Docker build context that serves ENDPOINT's live revision (docker build -t NAME OUT)."""
    with reported_errors(), client(url) as api:
        written = api.export_docker(endpoint, out)
    console.print(f"Wrote {len(written)} files to {out}. Build it with: docker build -t stratus-{endpoint} {out}")


@export_app.command("k8s")
def export_k8s(
    endpoint: str,
    image: Annotated[str | None, typer.Option(help="Image the Docker export was built as.")] = None,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "default",
    out: Annotated[Path | None, typer.Option("--out", help="File to write. Default: standard output.")] = None,
    url: UrlOption = None,
) -> None:
    """Deployment, Service, HorizontalPodAutoscaler and KServe InferenceService manifests for ENDPOINT."""
    with reported_errors(), client(url) as api:
        text = api.export_k8s(endpoint, image, namespace)
    if out is None:
        print(text, end="")
    else:
        out.write_text(text)
        console.print(f"Wrote {out}")


def serve_endpoint(
    folder: Annotated[Path, typer.Argument(help="An exported endpoint folder (the export's endpoint/).")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime threads.")] = None,
    insecure: Annotated[bool, typer.Option(help="Allow a non-loopback bind without a key.")] = False,
) -> None:
    """Serve one exported endpoint without a database (what the Docker image runs)."""
    from stratus.cli.endpoint_server import main as serve_main

    args = ["--dir", str(folder), "--host", host, "--port", str(port)]
    args += ["--threads", str(threads)] if threads else []
    args += ["--insecure"] if insecure else []
    serve_main(args)
