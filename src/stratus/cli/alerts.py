"""`stratus alerts list|create|show|delete|history`: alert rules and what they did."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stratus.cli.connection import client
from stratus.cli.output import console, print_table, reported_errors, show
from stratus.errors import InvalidInput

alerts_app = typer.Typer(no_args_is_help=True, help="Alert rules on latency, errors, drift and log drops.")

UrlOption = Annotated[str | None, typer.Option("--url", envvar="STRATUS_URL", help="Server URL.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def _target(rule: dict[str, Any]) -> str:
    return f"{rule['target_kind']} {rule['target']}"


def _render_rules(rules: list[dict[str, Any]]) -> None:
    rows = [
        (
            r["name"],
            _target(r),
            r["condition"],
            r["state"] if r["enabled"] else "disabled",
            "" if r["value"] is None else f"{r['value']:.4g}",
            r["webhook_url"] or "",
        )
        for r in rules
    ]
    print_table("Alert rules", ["name", "target", "condition", "state", "last value", "webhook"], rows)


@alerts_app.command("list")
def alerts_list(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """The project's alert rules and their state (inactive, pending, firing)."""
    with reported_errors(), client(url) as api:
        show(api.list_alerts(), as_json, _render_rules)


@alerts_app.command("create")
def alerts_create(
    name: str,
    when: Annotated[
        str,
        typer.Option(
            "--when",
            help="METRIC OP VALUE [for DURATION]: p99 > 200ms for 5m, error_rate > 5%, drift_share >= 0.5, "
            "log_dropped > 0.",
        ),
    ],
    model: Annotated[str | None, typer.Option(help="The model the rule watches.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="The endpoint the rule watches.")] = None,
    webhook: Annotated[
        str | None, typer.Option(help="http(s) URL called with a signed JSON body when the rule fires or resolves.")
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create the rule switched off.")] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create rule NAME. With --webhook, the answer shows the secret that signs its deliveries, once."""
    from stratus.monitoring.alerts import parse_condition

    with reported_errors():
        if (model is None) == (endpoint is None):
            raise InvalidInput("give exactly one of --model NAME or --endpoint NAME")
        condition = parse_condition(when)
        with client(url) as api:
            rule = api.create_alert(
                name,
                metric=condition.metric,
                op=condition.op,
                threshold=condition.threshold,
                for_seconds=condition.for_seconds,
                model=model,
                endpoint=endpoint,
                webhook_url=webhook,
                enabled=not disabled,
            )

        def render(r: dict[str, Any]) -> None:
            console.print(f"created alert rule {r['name']}: {_target(r)}, {r['condition']}")
            if r["webhook_url"]:
                console.print(f"webhook secret (shown once, verify Stratus-Signature with it): {r['secret']}")

        show(rule, as_json, render)


@alerts_app.command("show")
def alerts_show(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """One rule."""
    with reported_errors(), client(url) as api:
        show(api.get_alert(name), as_json, lambda r: _render_rules([r]))


@alerts_app.command("delete")
def alerts_delete(name: str, url: UrlOption = None) -> None:
    """Delete rule NAME (its history stays)."""
    with reported_errors(), client(url) as api:
        api.delete_alert(name)
        typer.echo(f"deleted alert rule {name}")


def _render_history(events: list[dict[str, Any]]) -> None:
    rows = []
    for e in events:
        attempts = "; ".join(
            f"#{a['attempt']} {a['status_code'] if a['status_code'] is not None else a['error']}" for a in e["attempts"]
        )
        value = "" if e["value"] is None else f"{e['value']:.4g}"
        rows.append((e["at"], e["rule"], e["status"], e["condition"], value, e["delivery"], attempts))
    print_table("Alert history", ["at", "rule", "status", "condition", "value", "webhook", "attempts"], rows)


@alerts_app.command("history")
def alerts_history(
    name: Annotated[str | None, typer.Argument(help="Only this rule's events.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many events.")] = 50,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """When rules fired and resolved, newest first, with each webhook attempt."""
    with reported_errors(), client(url) as api:
        show(api.alert_history(name, limit=limit), as_json, _render_history)
