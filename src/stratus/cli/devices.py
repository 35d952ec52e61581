"""`stratus devices ...` and `stratus export edge`: edge devices and their bundles (docs/edge.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stratus.cli.connection import client
from stratus.cli.output import console, print_table, reported_errors, show

devices_app = typer.Typer(no_args_is_help=True, help="Edge devices: enrollment tokens, list, revoke.")

UrlOption = Annotated[str | None, typer.Option("--url", envvar="STRATUS_URL", help="Server URL.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def _render(devices: list[dict[str, Any]]) -> None:
    rows = [
        [
            d["id"],
            d["name"],
            d["bundle"] or "-",
            d["health"] or "-",
            (d["last_seen"] or "never")[:19],
            "yes" if d["encrypted_bundles"] else "no",
            "active" if d["active"] else "revoked",
        ]
        for d in devices
    ]
    print_table("Devices", ["id", "name", "bundle", "health", "last seen", "encrypted", "state"], rows)


@devices_app.command("token")
def devices_token(
    ttl_seconds: Annotated[float | None, typer.Option(help="Lifetime. Default: a day.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """A one-time enrollment token for your project: `stratus-edge enroll --token ...` on the device."""
    with reported_errors(), client(url) as api:
        created = api.create_device_token(ttl_seconds)
    if as_json:
        show(created, True, lambda _: None)
        return
    console.print(f"Enrollment token for project {created['project']} (until {created['expires_at']}), shown once:")
    print(created["token"])


@devices_app.command("list")
def devices_list(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Your project's devices: what each serves, its health and when it was last seen."""
    with reported_errors(), client(url) as api:
        show(api.list_devices(), as_json, _render)


@devices_app.command("revoke")
def devices_revoke(device_id: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Revoke a device and its key: its next sync gets 401."""
    with reported_errors(), client(url) as api:
        show(api.revoke_device(device_id), as_json, lambda d: console.print(f"Revoked device {d['name']} ({d['id']})."))


def export_edge(
    model: Annotated[str, typer.Argument(help="MODEL, MODEL@ALIAS or MODEL:VERSION (default: production).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the bundle into.")],
    budget: Annotated[float, typer.Option(help="Largest quality drop of an int8 variant used instead.")] = 0.01,
    device: Annotated[str | None, typer.Option(help="Encrypt the bundle to this device's key.")] = None,
    url: UrlOption = None,
) -> None:
    """Write MODEL's signed edge bundle (ONNX files, int8 where a variant is within budget, signature, manifest)."""
    with reported_errors(), client(url) as api:
        written = api.export_edge(model, out, budget=budget, device=device)
    console.print(f"Wrote {len(written)} files to {out}. Serve it with: stratus-edge serve {out}")
