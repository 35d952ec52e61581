"""`stratus keys`, `stratus projects`, `stratus audit` and `stratus usage`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stratus.cli.connection import client
from stratus.cli.output import console, print_table, reported_errors, show

keys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys; rotate the master key.")
projects_app = typer.Typer(no_args_is_help=True, help="Projects (tenants) and their limits. Admin only.")

UrlOption = Annotated[str | None, typer.Option("--url", envvar="STRATUS_URL", help="Server URL.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def _render_keys(keys: list[dict[str, Any]]) -> None:
    rows = [
        (
            k["id"],
            k["project"],
            k["name"],
            ",".join(k["scopes"]),
            "yes" if k["active"] else "revoked" if k["revoked_at"] else "expired",
            k["expires_at"] or "never",
            k["created_at"],
        )
        for k in keys
    ]
    print_table("API keys", ["id", "project", "name", "scopes", "active", "expires", "created"], rows)


@keys_app.command("create")
def keys_create(
    scopes: Annotated[str, typer.Option(help="Comma-separated: read, predict, manage, admin.")],
    name: Annotated[str, typer.Option(help="A label for people.")] = "",
    project: Annotated[str | None, typer.Option(help="Project the key acts in. Default: yours.")] = None,
    expires_in_days: Annotated[float | None, typer.Option(help="Lifetime in days. Default: no expiry.")] = None,
    rate_limit_rps: Annotated[float | None, typer.Option(help="This key's requests/s limit.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key. Its secret is printed this once and cannot be shown again."""
    with reported_errors(), client(url) as api:
        created = api.create_key(
            [s.strip() for s in scopes.split(",") if s.strip()],
            project=project,
            name=name,
            expires_in_days=expires_in_days,
            rate_limit_rps=rate_limit_rps,
        )
    if as_json:
        show(created, True, lambda _: None)
        return
    console.print(f"Created key [bold]{created['id']}[/bold] in project {created['project']} ({created['scopes']}).")
    console.print("Store it now; it is not shown again:")
    print(created["key"])


@keys_app.command("list")
def keys_list(
    project: Annotated[str | None, typer.Option(help="Only this project's keys.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List keys (never their secrets)."""
    with reported_errors(), client(url) as api:
        show(api.list_keys(project), as_json, _render_keys)


@keys_app.command("revoke")
def keys_revoke(key_id: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Revoke a key. Requests with it fail within a second."""
    with reported_errors(), client(url) as api:
        show(api.revoke_key(key_id), as_json, lambda k: console.print(f"Revoked key {k['id']}."))


@keys_app.command("rotate-master")
def keys_rotate_master(
    home: Annotated[
        Path | None, typer.Option(help="Server home. Default ~/.stratus or STRATUS_HOME.", show_default=False)
    ] = None,
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            help="Read the new master key (base64 of 32 bytes) from this 0600 file instead of generating one."
        ),
    ] = None,
) -> None:
    """Re-wrap every artifact's data key with a new master key. The data itself is not rewritten."""
    import base64

    from stratus.security.rotation import rotate_master_key
    from stratus.settings import Settings

    with reported_errors():
        settings = Settings(home=home) if home is not None else Settings()
        new_key = base64.b64decode(new_key_file.read_text().strip(), validate=True) if new_key_file else None
        count = rotate_master_key(settings, new_key)
    console.print(f"Re-wrapped {count} data key(s) with the new master key.")


@projects_app.command("create")
def projects_create(
    name: str,
    rate_limit_rps: Annotated[float | None, typer.Option(help="Requests/s for the whole project.")] = None,
    monthly_item_quota: Annotated[int | None, typer.Option(help="Inferred items per calendar month.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a project (a tenant). Give it a key with `stratus keys create --project NAME`."""
    with reported_errors(), client(url) as api:
        created = api.create_project(name, rate_limit_rps=rate_limit_rps, monthly_item_quota=monthly_item_quota)
        show(created, as_json, lambda p: console.print(f"Created project {p['name']}."))


@projects_app.command("list")
def projects_list(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List projects and their limits."""
    with reported_errors(), client(url) as api:
        show(
            api.list_projects(),
            as_json,
            lambda projects: print_table(
                "Projects",
                ["name", "rate limit (req/s)", "monthly item quota"],
                [(p["name"], p["rate_limit_rps"] or "default", p["monthly_item_quota"] or "default") for p in projects],
            ),
        )


def audit(
    limit: Annotated[int, typer.Option(help="Newest events to show.")] = 50,
    key_id: Annotated[str | None, typer.Option(help="Only this key's events.")] = None,
    since: Annotated[str | None, typer.Option(help="Only events from this ISO time on (UTC).")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """The audit log of control-plane changes (admin)."""
    with reported_errors(), client(url) as api:
        events = api.audit(limit=limit, key_id=key_id, since=since)
        show(
            events,
            as_json,
            lambda rows: print_table(
                "Audit log",
                ["at", "key", "project", "action", "target", "from", "status", "detail"],
                [
                    (
                        e["at"],
                        e["key_id"],
                        e["project"],
                        e["action"],
                        e["target"],
                        e["address"],
                        e["status"],
                        e["detail"],
                    )
                    for e in rows
                ],
            ),
        )


def usage(
    start: Annotated[str | None, typer.Option("--from", help="ISO date or time (UTC), inclusive.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO date or time (UTC), exclusive.")] = None,
    group_by: Annotated[
        str, typer.Option(help="Comma-separated: project, key, model, endpoint, kind, day, month.")
    ] = "project,model",
    project: Annotated[str | None, typer.Option(help="One project (admins see all by default).")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Requests, items, tokens, compute and job CPU time, with a cost estimate."""
    with reported_errors(), client(url) as api:
        report = api.usage(start=start, end=end, group_by=group_by, project=project)
    show(report, as_json, _render_usage)


def _render_usage(report: dict[str, Any]) -> None:
    groups: list[str] = report["group_by"]
    columns = [*groups, "requests", "items", "tokens", "compute ms", "job CPU s", "cost"]
    rows = [
        (
            *(row["group"].get(g, "") for g in groups),
            row["requests"],
            row["items"],
            row["tokens"],
            f"{row['compute_ms']:.1f}",
            f"{row['cpu_seconds']:.1f}",
            f"{row['cost']:.4f}",
        )
        for row in report["rows"]
    ]
    total = report["total"]
    rows.append(
        (
            *(["total"] + [""] * (len(groups) - 1) if groups else []),
            total["requests"],
            total["items"],
            total["tokens"],
            f"{total['compute_ms']:.1f}",
            f"{total['cpu_seconds']:.1f}",
            f"{total['cost']:.4f}",
        )
    )
    print_table("Usage", columns, rows)
